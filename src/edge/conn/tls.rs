//! TLS at the edge with rustls: certificates chosen by SNI (exact names,
//! then wildcards, then the first certificate as the default), TLS 1.2 and
//! 1.3 only with rustls' modern suites (AEAD with forward secrecy: Mozilla
//! "intermediate"), ALPN h2, http/1.1 and http/1.0, optional client certificates.
//!
//! Certificates are read when the edge starts; SIGHUP starts a new edge
//! (new handshakes get the new files) while the old one finishes its open
//! connections.

use crate::config::tls::CertFacts;
use crate::config::TlsSite;
use crate::edge::acme::served::Served;
use async_trait::async_trait;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::server::handshake_with_callback;
use pingora_core::protocols::tls::{TlsRef, TlsStream};
use pingora_core::protocols::IO;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The first `[[tls.cert]]`, for names nothing else covers.
    default: Option<Arc<CertifiedKey>>,
    /// `[tls.acme]`: its hosts' certificate, and challenge answers.
    acme: Option<Arc<Served>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("exact", &self.exact.keys())
            .field("acme", &self.acme.as_ref().map(|a| &a.hosts))
            .finish()
    }
}

/// The ALPN protocol of a CA's TLS-ALPN-01 check (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        // RFC 8737 §3: the CA offers acme-tls/1 and nothing else.
        let validating = hello.alpn().is_some_and(|offered| {
            let mut offered = offered.peekable();
            offered.next_if(|p| *p == ACME_TLS_ALPN).is_some() && offered.next().is_none()
        });
        if validating {
            return self.acme.as_ref()?.alpn_certificate(name.as_deref()?);
        }
        let Some(name) = name else {
            return self.fallback();
        };
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some(acme) = self.acme.as_ref().filter(|a| a.covers(&name)) {
            return acme.certificate(&name);
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        self.fallback()
    }
}

impl SniResolver {
    /// For a name no certificate covers (or no SNI): the first file's,
    /// else the ACME one, as nginx serves its default server's.
    fn fallback(&self) -> Option<Arc<CertifiedKey>> {
        self.default.clone().or_else(|| {
            let acme = self.acme.as_ref()?;
            acme.certificate(acme.hosts.first()?)
        })
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
        let subject = x509_parser::parse_x509_certificate(der)
            .map(|(_, cert)| crate::config::tls::rfc4514(cert.subject()))
            .unwrap_or_default();
        Some(Arc::new(ClientSubject(subject)))
    }
}

/// Certificates and the client verifier, loaded once for every TLS listener.
pub struct Prepared {
    resolver: Arc<SniResolver>,
    /// What each `[[tls.cert]]` file holds, for `corral status`.
    pub files: Vec<CertFacts>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl Prepared {
    pub fn load(tls: &TlsSite, acme: Option<Arc<Served>>) -> Result<Self, String> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        let mut files = Vec::new();
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
            files.push(loaded.facts);
        }
        // No certificate at all only when [tls.acme]'s folder is unusable
        // (logged): handshakes then fail, HTTP still serves.
        let verifier =
            match &tls.client_ca {
                None => None,
                Some(ca) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for cert in crate::config::tls::read_chain(ca)? {
                        roots.add(cert).map_err(|e| {
                            format!("{}: unusable CA certificate: {e}", ca.display())
                        })?;
                    }
                    let provider = Arc::new(crate::config::tls::provider());
                    let builder =
                        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                    let builder = if tls.client_required {
                        builder
                    } else {
                        builder.allow_unauthenticated()
                    };
                    Some(builder.build().map_err(|e| {
                        format!("{}: cannot verify clients with it: {e}", ca.display())
                    })?)
                }
            };
        Ok(Prepared {
            resolver: Arc::new(SniResolver {
                exact,
                wildcard,
                default,
                acme,
            }),
            verifier,
            files,
        })
    }

    /// The acceptor shared by every TLS listener. corral builds rustls'
    /// `ServerConfig` itself (pingora's settings hide it) to size the
    /// session cache and turn on stateless tickets: resumed handshakes skip
    /// the expensive key exchange, for TLS 1.2 and 1.3 alike.
    pub fn acceptor(&self) -> Result<Handshaker, String> {
        // AES-128-GCM first, TLS 1.3 and 1.2 alike: as strong as the
        // certificates' own keys, and its SHA-256 key schedule runs on the
        // CPU's SHA instructions, where SHA-384 (OpenSSL clients ask for
        // AES-256 first) has none on AMD: ~15% of a resumed handshake.
        // Browsers already ask for it first.
        let mut provider = crate::config::tls::provider();
        provider.cipher_suites.sort_by_key(|s| {
            use rustls::CipherSuite as S;
            match s.suite() {
                S::TLS13_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
                S::TLS13_AES_256_GCM_SHA384
                | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
                _ => 2,
            }
        });
        let builder = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let builder = match &self.verifier {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.resolver.clone());
        // http/1.0 too: `curl --http1.0 https://…` offers only that, and
        // refusing it is a fatal alert (120), not a fallback.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()];
        if self.resolver.acme.is_some() {
            // Last: only a CA's check offers it, and offers nothing else.
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| e.to_string())?;
        config.ignore_client_order = true;
        Ok(Handshaker {
            acceptor: Acceptor::from_server_config(Arc::new(config)),
        })
    }
}

/// Sessions remembered for resumption by ID (clients without tickets);
/// about 100 bytes each.
const SESSION_CACHE: usize = 20_000;

/// Performs server handshakes for the accept loop.
pub struct Handshaker {
    acceptor: Acceptor,
}

impl Handshaker {
    /// The TLS handshake over an accepted connection; the client
    /// certificate's subject (if any) rides in the SSL digest.
    pub async fn handshake<S: IO + 'static>(
        &self,
        stream: S,
    ) -> pingora_core::Result<TlsStream<S>> {
        handshake_with_callback(&self.acceptor, stream, &SubjectCallback).await
    }
}
