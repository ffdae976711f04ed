//! TLS at the edge with rustls: certificates chosen by SNI (exact names,
//! then wildcards, then the first certificate as the default), TLS 1.2 and
//! 1.3 only with rustls' modern suites (AEAD with forward secrecy: Mozilla
//! "intermediate"), ALPN h2 and http/1.1, optional client certificates.
//!
//! Certificates are read when the edge starts; SIGHUP starts a new edge
//! (new handshakes get the new files) while the old one finishes its open
//! connections.

use crate::config::TlsSite;
use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// The verified client certificate's subject, carried to the request.
pub struct ClientSubject(pub String);

struct SubjectCallback;

#[async_trait]
impl TlsAccept for SubjectCallback {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(Arc::new(ClientSubject(cert.subject().to_string())))
    }
}

pub fn settings(tls: &TlsSite) -> Result<TlsSettings, String> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for c in &tls.certs {
        let loaded = crate::config::tls::load(&c.cert, &c.key, &[])?;
        default.get_or_insert_with(|| loaded.key.clone());
        for host in &c.hosts {
            let host = host.to_ascii_lowercase();
            match host.strip_prefix("*.") {
                Some(parent) => wildcard
                    .entry(parent.to_string())
                    .or_insert_with(|| loaded.key.clone()),
                None => exact.entry(host).or_insert_with(|| loaded.key.clone()),
            };
        }
    }
    let default = default.ok_or("no certificate configured")?;
    let mut settings =
        TlsSettings::with_callbacks(Box::new(SubjectCallback)).map_err(|e| e.to_string())?;
    settings.set_cert_resolver(Arc::new(SniResolver {
        exact,
        wildcard,
        default,
    }));
    settings.enable_h2();
    if let Some(ca) = &tls.client_ca {
        let mut roots = rustls::RootCertStore::empty();
        for cert in crate::config::tls::read_chain(ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: unusable CA certificate: {e}", ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let builder = if tls.client_required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        let verifier = builder
            .build()
            .map_err(|e| format!("{}: cannot verify clients with it: {e}", ca.display()))?;
        settings.set_client_cert_verifier(verifier);
    }
    Ok(settings)
}
