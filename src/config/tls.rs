//! Checking `[tls]` certificates and keys, for `corral check`, at start and
//! in the edge: PEM that parses, a key that matches its certificate, and
//! (as warnings) expiry and SNI names the certificate does not cover.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A certificate chain and key, ready for rustls, plus what the checks found.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// The leaf's issuer, serial, validity and SAN names (`corral status`).
    pub facts: CertFacts,
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
    let (names, mut warnings, facts) = inspect_leaf(&chain[0], cert_path)?;
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
        facts,
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
        .ok_or_else(|| no_key(path, &data))
}

/// Why no key was found: a passphrase-protected one is named as such,
/// since it is the usual cause and the PEM names it.
fn no_key(path: &Path, pem: &[u8]) -> String {
    let text = String::from_utf8_lossy(pem);
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return format!(
            "{} holds a passphrase-protected private key, which corral cannot read; \
             write it out unprotected (`openssl pkey -in {0} -out {0}.plain`) \
             and keep that file readable only by root",
            path.display()
        );
    }
    format!(
        "{} holds no private key (expected PKCS#8, PKCS#1 or SEC1 PEM)",
        path.display()
    )
}

fn inspect_leaf(
    der: &CertificateDer<'_>,
    path: &Path,
) -> Result<(Vec<String>, Vec<String>, CertFacts), String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("{}: cannot parse the certificate: {e}", path.display()))?;
    let facts = facts_of(&cert);
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
    let mut names = facts.names.clone();
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_ascii_lowercase))
            .collect();
    }
    Ok((names, warnings, facts))
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
fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
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

/// What a certificate says about itself: `corral status`, and when
/// `[tls.acme]` renews.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// DNS names in its subjectAltName, lowercased.
    pub names: Vec<String>,
    pub issuer: String,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The facts of a DER certificate.
pub fn facts(leaf: &CertificateDer<'_>) -> Result<CertFacts, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    Ok(facts_of(&cert))
}

fn facts_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> CertFacts {
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| rfc4514(cert.issuer()));
    let time = |t: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64)
    };
    CertFacts {
        names: dns_names(cert),
        issuer,
        serial: cert.raw_serial_as_string(),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    }
}

/// A distinguished name as RFC 4514 writes it (and nginx's
/// `$ssl_client_s_dn`): most specific RDN first, `,` between RDNs, and the
/// special characters of values escaped, so a comma inside a CN cannot pose
/// as another attribute.
pub fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    use x509_parser::oid_registry::*;
    let short = |oid: &x509_parser::der_parser::oid::Oid| -> String {
        let known = [
            (OID_X509_COMMON_NAME, "CN"),
            (OID_X509_ORGANIZATION_NAME, "O"),
            (OID_X509_ORGANIZATIONAL_UNIT, "OU"),
            (OID_X509_COUNTRY_NAME, "C"),
            (OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
            (OID_X509_LOCALITY_NAME, "L"),
            (OID_PKCS9_EMAIL_ADDRESS, "emailAddress"),
            (OID_DOMAIN_COMPONENT, "DC"),
        ];
        known
            .iter()
            .find(|(o, _)| o == oid)
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| oid.to_id_string())
    };
    let mut rdns: Vec<String> = Vec::new();
    for rdn in name.iter() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let value = atv.as_str().map(escape_dn_value).unwrap_or_else(|_| {
                    let hex: String = atv
                        .attr_value()
                        .data
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    format!("#{hex}")
                });
                format!("{}={value}", short(atv.attr_type()))
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
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
