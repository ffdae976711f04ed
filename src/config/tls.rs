//! Checking `[tls]` certificates and keys, for `corral check`, at start and
//! in the edge: PEM that parses, a key that matches its certificate, and
//! (as warnings) expiry and SNI names the certificate does not cover.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;

/// A certificate chain and key, ready for rustls, plus what the checks found.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// DNS names in the leaf's subjectAltName (or CN when there are none).
    pub names: Vec<String>,
    pub warnings: Vec<String>,
}

/// The cryptography behind every TLS listener: aws-lc-rs (BoringSSL's
/// assembly) rather than ring: faster X25519, and no getrandom system call
/// per random value (ring made 8 per handshake). Handshakes spend most of
/// their time in these.
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

pub fn load(cert_path: &Path, key_path: &Path, hosts: &[String]) -> Result<Loaded, String> {
    let chain = read_chain(cert_path)?;
    let key = read_key(key_path)?;
    let provider = provider();
    let certified = CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{} does not match the certificate in {}",
            key_path.display(),
            cert_path.display()
        ),
        other => format!("{}: unusable key: {other}", key_path.display()),
    })?;
    let (names, mut warnings) = inspect_leaf(&chain[0], cert_path)?;
    for host in hosts {
        if !names.iter().any(|n| covers(n, host)) {
            warnings.push(format!(
                "{} does not cover host `{host}` (it names: {})",
                cert_path.display(),
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
    }
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        warnings,
    })
}

pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected PEM blocks \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?
        .ok_or_else(|| {
            format!(
                "{} holds no private key (expected PKCS#8, PKCS#1 or SEC1 PEM)",
                path.display()
            )
        })
}

fn inspect_leaf(
    der: &CertificateDer<'_>,
    path: &Path,
) -> Result<(Vec<String>, Vec<String>), String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("{}: cannot parse the certificate: {e}", path.display()))?;
    let mut warnings = Vec::new();
    let validity = cert.validity();
    let now = ASN1Time::now();
    if validity.not_after < now {
        warnings.push(format!(
            "{} expired on {} (clients will refuse it)",
            path.display(),
            validity.not_after
        ));
    } else if validity.not_before > now {
        warnings.push(format!(
            "{} is not valid before {}",
            path.display(),
            validity.not_before
        ));
    }
    let mut names = dns_names(&cert);
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_ascii_lowercase))
            .collect();
    }
    Ok((names, warnings))
}

/// Whether certificate name `pattern` (maybe `*.example.com`) covers `host`
/// (a configured name, itself maybe a wildcard).
pub fn covers(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    if pattern == host {
        return true;
    }
    match (pattern.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => label != "*" && !label.is_empty() && rest == suffix,
        _ => false,
    }
}

/// The DNS names in a certificate's subjectAltName, lowercased.
pub fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_coverage() {
        assert!(covers("example.com", "EXAMPLE.com"));
        assert!(covers("*.example.com", "www.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(covers("*.example.com", "*.example.com"));
    }
}
