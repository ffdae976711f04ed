//! `[tls] redirect_http`: plain-HTTP requests are sent to the same host and
//! path over https: 301 for GET/HEAD, 308 for the rest (which keeps the
//! method and body, where 301 lets clients turn a POST into a GET).

use crate::edge::reply::{self, After};
use crate::edge::state::EdgeState;
use pingora_core::Result;
use pingora_proxy::Session;

/// Answers with a redirect when this plain-HTTP request must go to https.
pub async fn to_https(state: &EdgeState, session: &mut Session) -> Result<Option<u16>> {
    let Some(facts) = &state.tls else {
        return Ok(None);
    };
    if !facts.redirect_http || reply::is_tls(session) {
        return Ok(None);
    }
    let req = session.req_header();
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    // Host without its port (IPv6 literals keep their brackets).
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host.as_str(),
    };
    if name.is_empty() || name.contains(['/', '\\', '@', ' ']) {
        let why = "Bad Request: no valid Host to redirect to\n";
        reply::text(state, session, 400, why, &[], After::Close).await?;
        return Ok(Some(400));
    }
    let port = match facts.https_port {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let target = String::from_utf8_lossy(req.raw_path()).into_owned();
    let location = format!("https://{name}{port}{target}");
    let status = if matches!(req.method, http::Method::GET | http::Method::HEAD) {
        301
    } else {
        308
    };
    let body = format!("Moved to {location}\n");
    let extra = [("Location", location.as_str())];
    reply::text(state, session, status, body, &extra, After::KeepAlive).await?;
    Ok(Some(status))
}
