//! Rules on the parsed request head, for HTTP/1 and HTTP/2 alike: Host,
//! the request target, the header count, Content-Length. The byte grammar
//! of HTTP/1 (line ends, sizes, the request line, header syntax, body
//! framing) is `framing.rs`, which every HTTP/1 byte passes before pingora
//! reads it; each rule lives in one of the two, never both. Every refusal
//! closes the connection, so nothing after a bad request can be read as a
//! request of its own.

use super::framing::{transfer_coding, Coding};
use crate::config::schema::Limits;
use pingora_http::RequestHeader;

/// Checks a request head. `raw` is its exact bytes as received (HTTP/1
/// only). A valid head's declared body length comes back (None: no
/// Content-Length), so nothing parses it again.
pub fn check(
    req: &RequestHeader,
    raw: Option<&[u8]>,
    limits: &Limits,
) -> Result<Option<u64>, (u16, &'static str)> {
    match raw {
        Some(raw) => {
            // The framer passed this head but stopped after it if its
            // coding is refused; the reason is told here, where it can be
            // answered.
            let codings = field_values(raw, b"transfer-encoding");
            if let Coding::Refused(status, why) = transfer_coding(codings) {
                return Err((status, why));
            }
        }
        // The framer holds HTTP/1's request line to `max_request_line`;
        // HTTP/2 has none, so its method and :path are held to the line
        // they would make (nginx answers 414 on both too).
        None if request_line_len(req) > limits.max_request_line.0 as usize => {
            return Err((414, "request line too long"));
        }
        None => {}
    }
    if let Some(host) = req.headers.get(http::header::HOST) {
        if !valid_host(host.as_bytes()) {
            return Err((400, "invalid Host"));
        }
    }
    let target = req.raw_path();
    if target.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return Err((400, "control character or space in the request target"));
    }
    // RFC 9112 §3.2: origin-form starts with "/", absolute-form names a
    // scheme, "*" is for OPTIONS. (pingora "repairs" a request line with a
    // stray space by percent-encoding it, leaving a target like "T%20/x".)
    let origin = target.starts_with(b"/");
    let starts = |p: &[u8]| {
        target
            .get(..p.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(p))
    };
    let absolute = starts(b"http://") || starts(b"https://");
    let asterisk = target == b"*" && req.method == http::Method::OPTIONS;
    let authority = req.method == http::Method::CONNECT;
    if !(origin || absolute || asterisk || authority) {
        return Err((400, "malformed request target"));
    }
    // As nginx: a path that decodes to NUL or another control character is
    // refused (pingora percent-encodes raw ones, so this also catches those).
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if percent_encoding::percent_decode(path).any(|b| b < 0x20 || b == 0x7f) {
        return Err((400, "control character in the request path"));
    }
    let headers = &req.headers;
    if field_count(headers) > limits.max_headers {
        return Err((431, "too many header fields"));
    }
    let hosts = headers.get_all(http::header::HOST).iter().count();
    if hosts > 1 {
        return Err((400, "more than one Host header"));
    }
    if hosts == 0 && req.version == http::Version::HTTP_11 && req.uri.authority().is_none() {
        return Err((400, "HTTP/1.1 request without Host"));
    }
    if headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH)
    {
        // RFC 9112 §6.1: a smuggling attempt or a broken client either way.
        return Err((400, "both Transfer-Encoding and Content-Length"));
    }
    let values = req.headers.get_all(http::header::CONTENT_LENGTH);
    super::length::content_length(values.iter().map(|v| v.as_bytes()))
        .map_err(|e| (400, e.reason()))
}

/// `METHOD SP target SP HTTP/1.1`, without its CRLF.
fn request_line_len(req: &RequestHeader) -> usize {
    req.method.as_str().len() + 1 + req.raw_path().len() + " HTTP/1.1".len()
}

/// The header fields counted against `max_headers`: all `Cookie` fields
/// count as one. Over HTTP/2 browsers send each cookie as a field of its
/// own (RFC 9113 §8.2.3 allows it to help HPACK), so a site with a hundred
/// cookies would otherwise get 431 from Chromium while the same cookies on
/// one HTTP/1.1 line pass. Their size is still bounded by
/// `max_header_size` (h2's header list limit).
fn field_count(headers: &http::HeaderMap) -> usize {
    let cookies = headers.get_all(http::header::COOKIE).iter().count();
    headers.len() - cookies.saturating_sub(1)
}

/// The values of the raw head's fields called `name` (given lower-case;
/// matched in any case). Works on the bytes as received, without a copy:
/// this runs for every request.
fn field_values<'a>(raw: &'a [u8], name: &'static [u8]) -> impl Iterator<Item = &'a [u8]> {
    raw.split(|&b| b == b'\n').filter_map(move |line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (field, rest) = line.split_at_checked(name.len())?;
        let value = rest.strip_prefix(b":")?;
        field.eq_ignore_ascii_case(name).then_some(value)
    })
}

/// RFC 9110 §7.2 / RFC 3986: `host[:port]` with a reg-name, IPv4 or
/// bracketed IPv6 host.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        match v.iter().position(|&b| b == b']') {
            Some(end) => {
                let inner = &v[1..end];
                if inner.is_empty()
                    || !inner
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() || b".:".contains(b))
                {
                    return false;
                }
                (&v[..=end], &v[end + 1..])
            }
            None => return false,
        }
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &v[v.len()..]),
        }
    };
    let port_ok = port.is_empty() || (port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit));
    let host_ok = host.starts_with(b"[")
        || host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn req(raw: &[u8]) -> Result<(), (u16, &'static str)> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Request::new(&mut headers);
        let _ = r.parse(raw);
        let mut h = RequestHeader::build(
            r.method.unwrap_or("GET"),
            r.path.unwrap_or("/").as_bytes(),
            None,
        )
        .unwrap();
        if r.version == Some(0) {
            h.set_version(http::Version::HTTP_10);
        }
        for x in r.headers.iter() {
            h.append_header(x.name.to_string(), x.value).unwrap();
        }
        check(&h, Some(raw), &limits()).map(|_| ())
    }

    #[test]
    fn refusals() {
        assert!(req(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
        assert_eq!(req(b"GET / HTTP/1.1\r\n\r\n").unwrap_err().0, 400);
        assert!(req(b"GET / HTTP/1.0\r\n\r\n").is_ok());
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err().0,
            400
        );
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n")
                .unwrap_err()
                .0,
            400
        );
        assert!(req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\n").is_ok());
        // The coding the framer stopped at is answered here, from the raw
        // fields (any case, CRLF line ends).
        let te = |v: &str| req(format!("POST / HTTP/1.1\r\nHost: a\r\n{v}\r\n\r\n").as_bytes());
        assert!(te("Transfer-Encoding: Chunked").is_ok());
        assert_eq!(te("TRANSFER-ENCODING: GZIP, chunked").unwrap_err().0, 501);
        assert_eq!(
            te("transfer-encoding: chunked, chunked").unwrap_err().0,
            400
        );
        assert_eq!(
            te("transfer-encoding: chunked\r\ntransfer-encoding: chunked")
                .unwrap_err()
                .0,
            400
        );
        assert!(
            valid_host(b"example.com:8080") && valid_host(b"[::1]:80") && valid_host(b"127.0.0.1")
        );
        assert!(
            !valid_host(b"h h")
                && !valid_host(b"h:port")
                && !valid_host(b"h/x")
                && !valid_host(b"[::1")
        );
    }
}
