//! The one door every response head goes out through, so that what is
//! true of all responses is added in one place: HSTS on TLS connections.
//! And the one builder of the edge's own small answers (errors, redirects,
//! `OPTIONS *`).

use crate::edge::state::EdgeState;
use bytes::Bytes;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// The request's id, kept with its head so that every response head,
/// whoever builds it, echoes it as `X-Request-ID`. Held as a header value,
/// made once per request.
#[derive(Clone)]
pub struct EchoId(pub http::HeaderValue);

/// The field that echoes it, as written on the wire.
pub const ECHO_FIELD: &str = "X-Request-ID";
const ECHO_NAME: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Whether this request arrived over TLS.
pub fn is_tls(session: &Session) -> bool {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some()
}

/// What every response head carries besides its own fields, decided in
/// one place for `header`, `prepared` and the shortcut (`conn::shortcut`).
pub(crate) struct Every<'a> {
    /// Draining: the connection closes after this answer (HTTP/1;
    /// keep-alive clients reconnect, to the edge that replaces this one).
    pub(crate) closes: bool,
    /// HSTS, on TLS connections when configured.
    pub(crate) hsts: Option<&'a str>,
}

/// The rule, for a connection over HTTP/2 or not, TLS or not.
pub(crate) fn every<'a>(state: &'a EdgeState, http2: bool, tls: bool) -> Every<'a> {
    let hsts = state.tls.as_ref().map(|facts| facts.hsts.as_str());
    Every {
        closes: state.is_draining() && !http2,
        hsts: hsts.filter(|h| !h.is_empty() && tls),
    }
}

/// `every` for a session, which is told to close when the answer does;
/// with the request's id, echoed.
fn every_head<'a>(
    state: &'a EdgeState,
    session: &mut Session,
) -> (Every<'a>, Option<http::HeaderValue>) {
    let every = every(state, session.is_http2(), is_tls(session));
    if every.closes {
        session.set_keepalive(None);
    }
    let id = session.req_header().extensions.get::<EchoId>();
    (every, id.map(|id| id.0.clone()))
}

pub async fn header(
    state: &EdgeState,
    session: &mut Session,
    mut resp: ResponseHeader,
    end: bool,
) -> Result<()> {
    let (every, id) = every_head(state, session);
    if every.closes {
        resp.insert_header("Connection", "close")?;
    }
    match id {
        Some(id) => resp.insert_header(ECHO_FIELD, id)?,
        // A cached static head holds its place (`files::with_room`).
        None => drop(resp.remove_header(&ECHO_NAME)),
    }
    if let Some(hsts) = every.hsts {
        resp.insert_header("Strict-Transport-Security", hsts)?;
    }
    session.write_response_header(Box::new(resp), end).await
}

/// A whole 200 whose fields are HTTP/1 lines made beforehand (a cached
/// static file's), with what `every_head` adds. Written without a
/// header map (pingora adds Date, and Connection from the keep-alive
/// state); HEAD gets no body. `false` when nothing was written: over
/// HTTP/2, where `header` serves.
pub async fn prepared(
    state: &EdgeState,
    session: &mut Session,
    fields: &[u8],
    body: &[u8],
) -> Result<bool> {
    if session.is_http2() {
        return Ok(false);
    }
    let (every, id) = every_head(state, session);
    let id = id.as_ref().map(|id| id.as_bytes());
    let lines = prepared_lines(fields, id, every.hsts);
    let downstream = session.as_downstream_mut();
    downstream
        .write_prepared_response(http::StatusCode::OK, &lines, body)
        .await
}

/// A prepared head's fields and what every answer adds to them: the
/// request's id and HSTS (empty parts where there are none).
pub(crate) fn prepared_lines<'a>(
    fields: &'a [u8],
    id: Option<&'a [u8]>,
    hsts: Option<&'a str>,
) -> [&'a [u8]; 7] {
    let mut lines: [&[u8]; 7] = [fields, b"", b"", b"", b"", b"", b""];
    if let Some(id) = id {
        lines[1..4].copy_from_slice(&[b"X-Request-ID: ", id, b"\r\n"]);
    }
    if let Some(hsts) = hsts {
        lines[4..7].copy_from_slice(&[b"Strict-Transport-Security: ", hsts.as_bytes(), b"\r\n"]);
    }
    lines
}

/// Whether a connection may carry another request after a small answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum After {
    KeepAlive,
    /// The rest of an unread (or malformed) request would be taken as the
    /// next request: close instead.
    Close,
}

/// A small answer made by the edge itself: a plain-text body (none for
/// HEAD, and no Content-Type when empty), a few extra headers.
pub async fn text(
    state: &EdgeState,
    session: &mut Session,
    status: u16,
    body: impl Into<Bytes>,
    extra: &[(&'static str, &str)],
    after: After,
) -> Result<()> {
    let kind = "text/plain; charset=utf-8";
    typed(state, session, status, (kind, body.into()), extra, after).await
}

/// A small answer of the edge's own that no cache may keep (health,
/// ACME challenges), on a connection that stays open.
pub async fn uncached(
    state: &EdgeState,
    session: &mut Session,
    status: u16,
    body: (&str, Bytes),
) -> Result<()> {
    let extra = [("Cache-Control", "no-store")];
    typed(state, session, status, body, &extra, After::KeepAlive).await
}

/// A small answer with a body of this content type.
pub async fn typed(
    state: &EdgeState,
    session: &mut Session,
    status: u16,
    (kind, body): (&str, Bytes),
    extra: &[(&'static str, &str)],
    after: After,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(extra.len() + 3))?;
    if !body.is_empty() {
        resp.insert_header("Content-Type", kind)?;
    }
    resp.insert_header("Content-Length", body.len().to_string())?;
    for (name, value) in extra {
        resp.insert_header(*name, *value)?;
    }
    if after == After::Close {
        resp.insert_header("Connection", "close")?;
        session.set_keepalive(None);
    }
    let end = body.is_empty() || session.req_header().method == http::Method::HEAD;
    header(state, session, resp, end).await?;
    if !end {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The same small answer, as raw HTTP/1.1 bytes, for a connection refused
/// before pingora reads it (`conn::guard`: bad framing, header deadline):
/// no session exists yet, and the connection closes after it.
pub fn before_http(status: u16) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = format!("{status} {reason}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
