//! A request head as the edge writes it to a worker, parsed (sans-IO: the
//! WSGI server reads it from a blocking socket, the ASGI server from
//! asyncio's `data_received`).
//!
//! Only the edge connects to a worker and it always re-frames requests
//! with a Content-Length, so the rules are deliberately narrow: anything
//! else (Transfer-Encoding, bad or conflicting lengths, too many fields)
//! is refused.

/// Largest request head accepted from the edge.
pub const MAX_HEAD: usize = 1 << 20;
const MAX_HEADERS: usize = 256;

pub struct RequestHead {
    pub method: String,
    /// The raw request target, e.g. `/a%20b?x=1`.
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub content_length: u64,
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` field (a WebSocket handshake).
    pub upgrade: bool,
}

/// Why a head was refused: the status to answer, and a reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad(pub u16, pub &'static str);

/// Where the head ends (just past its blank line), if it is all there.
pub fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Parses a complete head (up to and including the blank line).
pub fn parse(head: &[u8]) -> Result<RequestHead, Bad> {
    let mut headers_buf = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers_buf);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Bad(400, "incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Bad(431, "too many headers")),
        Err(_) => return Err(Bad(400, "malformed request")),
    }
    let mut out = RequestHead {
        method: req.method.unwrap_or("GET").to_string(),
        target: req.path.unwrap_or("/").to_string(),
        headers: Vec::with_capacity(req.headers.len()),
        content_length: 0,
        keep_alive: req.version == Some(1),
        upgrade: false,
    };
    let mut length: Option<u64> = None;
    let mut has_upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // The edge writes one plain length; anything else is refused.
            let n =
                crate::proto::length::parse_one(h.value).ok_or(Bad(400, "bad content-length"))?;
            if length.is_some_and(|c| c != n) {
                return Err(Bad(400, "conflicting content-length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Bad(400, "transfer-encoding is not accepted here"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection_tokens(h.value, &mut out);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            has_upgrade = true;
        }
        out.headers.push((h.name.to_string(), h.value.to_vec()));
    }
    out.upgrade &= has_upgrade;
    out.content_length = length.unwrap_or(0);
    Ok(out)
}

/// `close`, `keep-alive` and `upgrade` in a Connection field.
fn connection_tokens(value: &[u8], head: &mut RequestHead) {
    for token in value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            head.keep_alive = false;
        } else if token.eq_ignore_ascii_case(b"keep-alive") {
            head.keep_alive = true;
        } else if token.eq_ignore_ascii_case(b"upgrade") {
            head.upgrade = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_edge_writes() {
        let h = parse(b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str()), ("POST", "/x?y=1"));
        assert_eq!(
            (h.content_length, h.keep_alive, h.upgrade),
            (5, true, false)
        );
        let h =
            parse(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert!(h.upgrade);
        let h = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!h.keep_alive && !h.upgrade);
    }

    #[test]
    fn refuses_ambiguous_framing() {
        for raw in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        ] {
            assert_eq!(parse(raw).err().map(|b| b.0), Some(400));
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nxx"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
