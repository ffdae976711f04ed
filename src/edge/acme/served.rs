//! What TLS handshakes and the request path read while orders run in the
//! background: the certificate in use (swapped in place, so a renewal
//! needs no restart and drops no connection), and the answers to the CA's
//! challenges, kept in memory and in `state_dir/challenges/` so another
//! instance behind the same load balancer can answer for the one ordering.

use super::store::{Stamp, Store};
use crate::config::tls::CertFacts;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::warn;

pub struct Served {
    pub hosts: Vec<String>,
    /// The site answers HTTP-01 (else only TLS-ALPN-01 checks).
    http01: bool,
    pub store: Store,
    current: RwLock<Option<Current>>,
    /// A stored file found unusable: not read (nor reported) again.
    rejected: Mutex<Option<Stamp>>,
    answers: Mutex<HashMap<String, Vec<u8>>>,
    alpn_certs: Mutex<HashMap<String, AlpnAnswer>>,
    /// Unix second of the last "no certificate yet" line: one per 30 s.
    missing_logged: AtomicU64,
    pub progress: Mutex<Progress>,
}

/// A TLS-ALPN-01 certificate, and the digest it was made for.
type AlpnAnswer = (Vec<u8>, Arc<CertifiedKey>);

struct Current {
    key: Arc<CertifiedKey>,
    facts: CertFacts,
    stamp: Option<Stamp>,
}

/// How ordering goes, for `corral status`.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub next: Option<SystemTime>,
    pub last_error: Option<String>,
}

impl Served {
    pub fn new(hosts: Vec<String>, store: Store, http01: bool) -> Served {
        Served {
            hosts,
            http01,
            store,
            current: RwLock::new(None),
            rejected: Mutex::new(None),
            answers: Mutex::new(HashMap::new()),
            alpn_certs: Mutex::new(HashMap::new()),
            missing_logged: AtomicU64::new(0),
            progress: Mutex::new(Progress::default()),
        }
    }

    pub fn covers(&self, name: &str) -> bool {
        self.hosts.iter().any(|h| h == name)
    }

    /// The certificate for a handshake, or None (the handshake fails) while
    /// none has been issued yet.
    pub fn certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let key = self.current.read().ok()?.as_ref().map(|c| c.key.clone());
        if key.is_none() {
            self.log_missing(name);
        }
        key
    }

    fn log_missing(&self, name: &str) {
        let now = unix_secs(SystemTime::now());
        let last = self.missing_logged.load(Ordering::Relaxed);
        if now >= last + 30
            && self
                .missing_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                "TLS handshake for `{name}` refused: no certificate yet from [tls.acme] \
                 (the order is running or failing: see the acme lines)"
            );
        }
    }

    pub fn facts(&self) -> Option<CertFacts> {
        self.current.read().ok()?.as_ref().map(|c| c.facts.clone())
    }

    /// Installs the stored certificate if it changed since the last look.
    /// Returns the facts of a newly installed one.
    pub fn reload(&self) -> Result<Option<CertFacts>, String> {
        let stamp = self.store.cert_stamp();
        let seen = self.current.read().ok().and_then(|c| c.as_ref()?.stamp);
        let rejected = self.rejected.lock().ok().and_then(|r| *r);
        if stamp.is_none() || stamp == seen || stamp == rejected {
            return Ok(None);
        }
        let parsed = self.store.read_cert().and_then(|pem| {
            parse(&pem).map_err(|e| format!("{}: {e}", self.store.cert_path().display()))
        });
        let parsed = parsed.and_then(|(key, facts)| self.no_worse(facts).map(|f| (key, f)));
        let (key, facts) = match parsed {
            Ok(p) => p,
            Err(e) => {
                if let Ok(mut r) = self.rejected.lock() {
                    *r = stamp;
                }
                return Err(e);
            }
        };
        if let Ok(mut current) = self.current.write() {
            *current = Some(Current {
                key,
                facts: facts.clone(),
                stamp,
            });
        }
        Ok(Some(facts))
    }

    /// A stored certificate replaces the one served only if it covers as
    /// many of the hosts: another config sharing the folder must not take
    /// names away from this one.
    fn no_worse(&self, new: CertFacts) -> Result<CertFacts, String> {
        let covered = |f: &CertFacts| self.hosts.iter().filter(|h| f.names.contains(h)).count();
        let now = self.facts().map_or(0, |f| covered(&f));
        if covered(&new) < now {
            return Err(format!(
                "it covers fewer of {} than the certificate in use",
                self.hosts.join(", ")
            ));
        }
        Ok(new)
    }

    /// An HTTP-01 answer: the key authorization for `token`.
    pub fn publish_http(&self, token: &str, key_authorization: &str) -> Result<String, String> {
        let name = format!("http-{token}");
        self.publish(&name, key_authorization.as_bytes())?;
        Ok(name)
    }

    /// A TLS-ALPN-01 answer: the key authorization's SHA-256 for `host`.
    pub fn publish_alpn(&self, host: &str, digest: &[u8]) -> Result<String, String> {
        let name = format!("alpn-{host}");
        self.publish(&name, digest)?;
        Ok(name)
    }

    fn publish(&self, name: &str, value: &[u8]) -> Result<(), String> {
        self.store.write_challenge(name, value)?;
        if let Ok(mut answers) = self.answers.lock() {
            answers.insert(name.to_string(), value.to_vec());
        }
        Ok(())
    }

    pub fn withdraw(&self, names: &[String]) {
        for name in names {
            self.store.remove_challenge(name);
            if let Ok(mut answers) = self.answers.lock() {
                answers.remove(name);
            }
        }
    }

    fn answer(&self, name: &str) -> Option<Vec<u8>> {
        let mine = self.answers.lock().ok()?.get(name).cloned();
        mine.or_else(|| self.store.read_challenge(name))
    }

    /// Whether `GET /.well-known/acme-challenge/…` for `host` is the CA's:
    /// otherwise it is the app's (certbot's webroot for a [[tls.cert]] host).
    pub fn answers_http(&self, host: &str) -> bool {
        self.http01 && self.covers(host)
    }

    /// `GET /.well-known/acme-challenge/<token>`'s body.
    pub fn http_answer(&self, token: &str) -> Option<Vec<u8>> {
        is_token(token).then(|| self.answer(&format!("http-{token}")))?
    }

    /// The self-signed certificate RFC 8737 asks for, for a handshake with
    /// ALPN `acme-tls/1` naming `host`.
    pub fn alpn_certificate(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        if !self.covers(host) {
            return None;
        }
        let digest = self.answer(&format!("alpn-{host}"))?;
        // A SHA-256, or a file someone else wrote: rcgen asserts 32 bytes.
        if digest.len() != 32 {
            warn!("acme: the tls-alpn-01 answer for {host} is not a SHA-256 digest");
            return None;
        }
        if let Some((d, key)) = self.alpn_certs.lock().ok()?.get(host) {
            if *d == digest {
                return Some(key.clone());
            }
        }
        match challenge_certificate(host, &digest) {
            Ok(key) => {
                let mut certs = self.alpn_certs.lock().ok()?;
                certs.insert(host.to_string(), (digest, key.clone()));
                Some(key)
            }
            Err(e) => {
                warn!("acme: cannot make the tls-alpn-01 certificate for {host}: {e}");
                None
            }
        }
    }
}

/// An ACME token (RFC 8555 §8.1: base64url), safe as part of a file name.
pub fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn challenge_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `from_der`: its key check parses the certificate with webpki,
    // which refuses the critical acmeIdentifier extension.
    let signer = crate::config::tls::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// A stored chain-then-key PEM, ready for rustls, and what it says.
pub fn parse(pem: &[u8]) -> Result<(Arc<CertifiedKey>, CertFacts), String> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    let key = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("not valid PEM: {e}"))?
        .ok_or("holds no private key")?;
    let leaf = chain.first().ok_or("holds no certificate")?;
    let facts = crate::config::tls::facts(leaf)?;
    let provider = crate::config::tls::provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| e.to_string())?;
    Ok((Arc::new(key), facts))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
