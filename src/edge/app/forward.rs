//! What crosses the edge→worker hop: the request head the edge writes for
//! the worker, and the response head it gives the client.
//!
//! The worker learns the real client, the listener and the scheme from
//! `x-corral-*` headers. Clients cannot forge them: any they send are
//! dropped here first. X-Forwarded-For/-Proto/-Host are set for the app
//! the same way nginx's usual proxy config does, but replace (rather than
//! extend) what the client sent, since nothing trusted stands in front.

use crate::edge::app::upstream::{Framing, ResponseHead};
use crate::wire;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Bytes escaped in the forwarded client DN: controls, non-ASCII and `%`.
const DN_ENCODE: percent_encoding::AsciiSet = percent_encoding::CONTROLS.add(b'%');

pub fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The real client and scheme. From a peer in `[server] trusted_proxies`,
/// the rightmost X-Forwarded-For address that is not itself trusted, and
/// X-Forwarded-Proto; from anyone else, the peer and the connection's own
/// scheme (their X-Forwarded-* headers are replaced, never believed).
pub fn client_and_scheme(
    session: &Session,
    trusted: &[(std::net::IpAddr, u8)],
) -> (Option<std::net::SocketAddr>, &'static str) {
    let peer = session.client_addr().and_then(|a| a.as_inet().copied());
    let own_scheme = if crate::edge::reply::is_tls(session) {
        "https"
    } else {
        "http"
    };
    let is_trusted = |ip: &std::net::IpAddr| is_trusted(trusted, ip);
    let Some(peer) = peer.filter(|p| is_trusted(&p.ip())) else {
        return (peer, own_scheme);
    };
    let headers = &session.req_header().headers;
    let forwarded: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let client = forwarded
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(forwarded.first())
        .map(|ip| std::net::SocketAddr::new(*ip, peer.port()))
        .unwrap_or(peer);
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some(p) if p.trim().eq_ignore_ascii_case("https") => "https",
        Some(p) if p.trim().eq_ignore_ascii_case("http") => "http",
        _ => own_scheme,
    };
    (Some(client), scheme)
}

fn is_trusted(trusted: &[(std::net::IpAddr, u8)], ip: &std::net::IpAddr) -> bool {
    trusted
        .iter()
        .any(|b| crate::config::units::cidr_contains(b, ip))
}

/// The `X-Request-ID` a trusted proxy in front gave the request (1 to 200
/// visible ASCII characters), to be used as its id; from anyone else it is
/// replaced by the edge's own.
pub fn given_request_id(
    session: &Session,
    trusted: &[(std::net::IpAddr, u8)],
) -> Option<std::sync::Arc<str>> {
    let peer = session.client_addr().and_then(|a| a.as_inet().copied())?;
    if !is_trusted(trusted, &peer.ip()) {
        return None;
    }
    let value = session.req_header().headers.get("x-request-id")?.as_bytes();
    let valid = (1..=200).contains(&value.len()) && value.iter().all(|b| (0x21..=0x7e).contains(b));
    valid.then(|| String::from_utf8_lossy(value).into())
}

/// What follows a request head on the hop.
pub enum Then {
    /// A body of this many bytes (the edge holds it whole).
    Body(u64),
    /// Nothing; the handshake asks the worker for a WebSocket (the only
    /// hop-by-hop fields the worker gets, since the edge tunnels after a 101).
    WebSocket,
}

/// All the request's cookies as one field, where the first was: browsers
/// send each as a field of its own over HTTP/2, which the edge counts as
/// one (`proto::strict`) and RFC 9113 §8.2.3 says to join with "; ".
/// Separate, a few hundred would pass the edge and overflow the worker's
/// head parser (431 from 244 on).
fn joined_cookies(h: &mut Vec<u8>, req: &pingora_http::RequestHeader) {
    h.extend_from_slice(b"cookie: ");
    for (i, v) in req.headers.get_all(http::header::COOKIE).iter().enumerate() {
        if i > 0 {
            h.extend_from_slice(b"; ");
        }
        h.extend_from_slice(v.as_bytes());
    }
    h.extend_from_slice(b"\r\n");
}

/// `client` and `scheme` come from [`client_and_scheme`], worked out once
/// per request.
pub fn request_head(
    session: &Session,
    (request_id, received): (&str, std::time::SystemTime),
    then: Then,
    client: Option<std::net::SocketAddr>,
    scheme: &str,
) -> Vec<u8> {
    let req = session.req_header();
    let mut h = Vec::with_capacity(512);
    // An HTTP/2 WebSocket (extended CONNECT) reaches the worker as the
    // HTTP/1.1 handshake it stands for (RFC 8441 §5).
    let method = match then {
        Then::WebSocket if req.method == http::Method::CONNECT => "GET",
        _ => req.method.as_str(),
    };
    h.extend_from_slice(method.as_bytes());
    h.push(b' ');
    let target = req.raw_path();
    h.extend_from_slice(if target.is_empty() { b"/" } else { target });
    h.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host: Option<Vec<u8>> = None;
    let mut cookies_written = false;
    for (name, value) in req.headers.iter() {
        let n = name.as_str();
        // Content-Length too: the body goes to the worker re-framed, with
        // the length the edge counted (added below).
        let ours = n == "content-length"
            || n.starts_with(wire::PREFIX)
            || n.starts_with("x-forwarded-")
            || n == "x-request-id"
            || n == "x-request-start";
        if wire::is_hop_by_hop(n) || ours {
            continue;
        }
        if n == "host" {
            host = Some(value.as_bytes().to_vec());
        }
        if n == "cookie" {
            if !std::mem::replace(&mut cookies_written, true) {
                joined_cookies(&mut h, req);
            }
            continue;
        }
        h.extend_from_slice(n.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(value.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    // HTTP/2 carries the host in :authority.
    if host.is_none() {
        if let Some(auth) = req.uri.authority() {
            host = Some(auth.as_str().as_bytes().to_vec());
            h.extend_from_slice(b"host: ");
            h.extend_from_slice(auth.as_str().as_bytes());
            h.extend_from_slice(b"\r\n");
        }
    }
    let local = session.server_addr().and_then(|a| a.as_inet().copied());
    let client_subject = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<crate::edge::conn::tls::ClientSubject>())
        .map(|s| s.0.clone());
    let mut add = |k: &str, v: &[u8]| {
        h.extend_from_slice(k.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v);
        h.extend_from_slice(b"\r\n");
    };
    if let Some(c) = client {
        add(wire::CLIENT, c.to_string().as_bytes());
        add("x-forwarded-for", c.ip().to_string().as_bytes());
    }
    if let Some(l) = local {
        add(wire::LOCAL, l.to_string().as_bytes());
    }
    add(wire::SCHEME, scheme.as_bytes());
    if let Some(subject) = &client_subject {
        // Presence of this header means the certificate was verified; the
        // subject goes as percent-encoded UTF-8, so any name survives intact.
        add(wire::CLIENT_VERIFY, b"SUCCESS");
        let safe: String = percent_encoding::utf8_percent_encode(subject, &DN_ENCODE).to_string();
        add(wire::CLIENT_CERT, safe.as_bytes());
    }
    add("x-forwarded-proto", scheme.as_bytes());
    if let Some(host) = &host {
        add("x-forwarded-host", host);
    }
    add(wire::PROTOCOL, protocol(req.version).as_bytes());
    if takes_trailers(req) {
        add(wire::TRAILERS, b"1");
    }
    add(wire::REQUEST_ID, request_id.as_bytes());
    // What APM agents (New Relic, Datadog, Scout) read: the request's id,
    // and when the edge received it, for the time spent queueing.
    add("x-request-id", request_id.as_bytes());
    let micros = received
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    add("x-request-start", format!("t={micros}").as_bytes());
    match then {
        // No body and no length from the client: none to the worker either
        // (it reads that as 0), so the app sees the fields the client sent.
        Then::Body(0) if !req.headers.contains_key(http::header::CONTENT_LENGTH) => {}
        Then::Body(len) => add("content-length", len.to_string().as_bytes()),
        Then::WebSocket => {
            add("content-length", b"0");
            add("upgrade", b"websocket");
            add("connection", b"upgrade");
        }
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// Whether the client can take trailers: h2 always carries them; an
/// HTTP/1.1 client says so with `TE: trailers` (a chunked body carries them).
fn takes_trailers(req: &pingora_http::RequestHeader) -> bool {
    match req.version {
        http::Version::HTTP_2 => true,
        http::Version::HTTP_11 => req.headers.get_all(http::header::TE).iter().any(|v| {
            String::from_utf8_lossy(v.as_bytes()).split(',').any(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("trailers")
            })
        }),
        _ => false,
    }
}

pub fn response_header(session: &Session, resp: &ResponseHead) -> Result<ResponseHeader> {
    let mut out = ResponseHeader::build(resp.status, Some(resp.headers.len() + 2))?;
    let mut has_date = false;
    for (name, value) in &resp.headers {
        let lname = name.to_ascii_lowercase();
        // Content-Length passes through (for HEAD it reports the GET length).
        if wire::is_hop_by_hop(&lname) {
            continue;
        }
        has_date |= lname == "date";
        out.append_header(name.clone(), value.as_slice())?;
    }
    if !has_date {
        out.insert_header(
            "Date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        )?;
    }
    // A body of unknown length goes out chunked to HTTP/1.1 clients
    // (HTTP/1.0 ones get it delimited by the connection's close).
    if matches!(resp.framing, Framing::Chunked | Framing::UntilClose)
        && !session.is_http2()
        && session.req_header().version == http::Version::HTTP_11
    {
        out.insert_header("Transfer-Encoding", "chunked")?;
    }
    Ok(out)
}
