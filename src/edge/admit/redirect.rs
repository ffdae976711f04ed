//! `[tls] redirect_http`: plain-HTTP requests are sent to the same host and
//! path over https: 301 for GET/HEAD, 308 for the rest (which keeps the
//! method and body, where 301 lets clients turn a POST into a GET).

use crate::edge::reply;
use crate::edge::state::EdgeState;
use pingora_proxy::Session;

pub enum Redirect {
    /// No usable host to send the client to: 400.
    BadHost,
    To {
        status: u16,
        location: String,
    },
}

/// Where this request must go instead, if it must go to https.
pub fn decide(state: &EdgeState, session: &Session) -> Option<Redirect> {
    let facts = state.tls.as_ref()?;
    if !facts.redirect_http || reply::is_tls(session) {
        return None;
    }
    let req = session.req_header();
    let name = crate::edge::request::host_name(req);
    if name.is_empty() || name.contains(['/', '\\', '@', ' ']) {
        return Some(Redirect::BadHost);
    }
    let port = match facts.https_port {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let target = String::from_utf8_lossy(req.raw_path());
    let status = if matches!(req.method, http::Method::GET | http::Method::HEAD) {
        301
    } else {
        308
    };
    Some(Redirect::To {
        status,
        location: format!("https://{name}{port}{target}"),
    })
}
