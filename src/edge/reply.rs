//! The one door every response head goes out through, so that what is
//! true of all responses is added in one place: HSTS on TLS connections.
//! Settings that are the same for the whole edge live here too.

use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::sync::OnceLock;

/// Edge-wide TLS facts, set once at start.
#[derive(Default)]
pub struct TlsFacts {
    pub hsts: String,
    pub redirect_http: bool,
    /// Port of the first TLS listener, for redirects.
    pub https_port: Option<u16>,
}

static TLS: OnceLock<TlsFacts> = OnceLock::new();

pub fn set_tls_facts(facts: TlsFacts) {
    let _ = TLS.set(facts);
}

pub fn tls_facts() -> Option<&'static TlsFacts> {
    TLS.get()
}

/// Whether this request arrived over TLS.
pub fn is_tls(session: &Session) -> bool {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some()
}

pub async fn header(session: &mut Session, mut resp: ResponseHeader, end: bool) -> Result<()> {
    if crate::edge::state::DRAINING.load(std::sync::atomic::Ordering::Relaxed)
        && !session.is_http2()
    {
        // Keep-alive clients reconnect, to the edge that replaces this one.
        session.set_keepalive(None);
        resp.insert_header("Connection", "close")?;
    }
    if let Some(facts) = tls_facts() {
        if !facts.hsts.is_empty() && is_tls(session) {
            resp.insert_header("Strict-Transport-Security", &facts.hsts)?;
        }
    }
    session.write_response_header(Box::new(resp), end).await
}
