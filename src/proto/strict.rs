//! What the edge refuses before a request goes anywhere, on top of
//! pingora's own HTTP/1 parser (which already rejects most malformed
//! framing): the RFC 9112 rules it is lenient about, and `[limits]` on the
//! request head. Every refusal closes the connection, so nothing after a
//! bad request can be read as a request of its own.

use crate::config::schema::Limits;
use pingora_http::RequestHeader;

/// Checks a request head. `raw` is its exact bytes as received (HTTP/1 only).
pub fn check(
    req: &RequestHeader,
    raw: Option<&[u8]>,
    limits: &Limits,
) -> Result<(), (u16, &'static str)> {
    if let Some(raw) = raw {
        check_raw(raw, limits)?;
        // pingora drops Content-Length when Transfer-Encoding is present,
        // so the pair can only be seen in the raw bytes.
        let has = |name: &'static [u8]| field_values(raw, name).next().is_some();
        if has(b"transfer-encoding") && has(b"content-length") {
            return Err((400, "both Transfer-Encoding and Content-Length"));
        }
        check_transfer_encoding(raw)?;
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
    if headers.len() > limits.max_headers {
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
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let parse = |v: &http::HeaderValue| -> Option<u64> {
            let s = v.to_str().ok()?;
            let mut seen: Option<u64> = None;
            for part in s.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let n: u64 = part.parse().ok()?;
                if seen.is_some_and(|m| m != n) {
                    return None;
                }
                seen = Some(n);
            }
            seen
        };
        let n = parse(first).ok_or((400, "invalid Content-Length"))?;
        for other in lengths {
            if parse(other) != Some(n) {
                return Err((400, "conflicting Content-Length headers"));
            }
        }
    }
    Ok(())
}

/// The raw-bytes rules alone, for the fuzzer.
#[cfg(test)]
pub fn check_raw_for_fuzz(raw: &[u8]) -> Result<(), (u16, &'static str)> {
    check_raw(raw, &Limits::default())
}

/// The values of the raw head's fields called `name` (given lower-case;
/// matched in any case). Works on the bytes as received, without a copy:
/// this runs for every request.
fn field_values<'a>(raw: &'a [u8], name: &'static [u8]) -> impl Iterator<Item = &'a [u8]> {
    raw.split(|&b| b == b'\n').filter_map(move |line| {
        let (field, rest) = line.split_at_checked(name.len())?;
        let value = rest.strip_prefix(b":")?;
        field.eq_ignore_ascii_case(name).then_some(value)
    })
}

/// Transfer-Encoding, from the raw head: exactly one field,
/// and exactly `chunked`. Anything else is refused rather than guessed at:
/// codings stacked under chunked (501, corral does not decode them) and
/// oddities like `chunked, chunked` or `identity, chunked` (400), which
/// other HTTP parsers read differently (request smuggling).
fn check_transfer_encoding(raw: &[u8]) -> Result<(), (u16, &'static str)> {
    let mut values = field_values(raw, b"transfer-encoding");
    let Some(value) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err((400, "more than one Transfer-Encoding header"));
    }
    let one = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
    if one == "chunked" {
        return Ok(());
    }
    let codings: Vec<&str> = one.split(',').map(str::trim).collect();
    let known = ["gzip", "x-gzip", "deflate", "compress", "br", "zstd"];
    if codings.last() == Some(&"chunked")
        && codings[..codings.len() - 1]
            .iter()
            .all(|c| known.contains(c))
    {
        Err((501, "transfer codings other than chunked are not supported"))
    } else {
        Err((400, "Transfer-Encoding must be exactly \"chunked\""))
    }
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

/// Rules on the raw bytes: CRLF line endings only, no control bytes in the
/// request line, and the size limits.
fn check_raw(raw: &[u8], limits: &Limits) -> Result<(), (u16, &'static str)> {
    if raw.len() as u64 > limits.max_header_size.0 {
        return Err((431, "request head too large"));
    }
    let line_end = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
    if line_end as u64 > limits.max_request_line.0 {
        return Err((414, "request line too long"));
    }
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            return Err((400, "bare LF where CRLF is required"));
        }
        if b == b'\r' && raw.get(i + 1) != Some(&b'\n') {
            return Err((400, "bare CR"));
        }
    }
    let line = &raw[..line_end];
    if line.iter().any(|&b| (b < 0x20 && b != b'\r') || b == 0x7f) {
        return Err((400, "control character in the request line"));
    }
    let mut parts = line
        .strip_suffix(b"\r")
        .unwrap_or(line)
        .split(|&b| b == b' ');
    let (_method, _target, version) = (parts.next(), parts.next(), parts.next());
    if parts.next().is_some() {
        return Err((400, "malformed request line"));
    }
    if let Some(v) = version {
        // HTTP/1.x: framing.rs has it answered as 1.1 (RFC 9110 §2.5).
        let one_x = v.len() == 8 && v.starts_with(b"HTTP/1.") && v[7].is_ascii_digit();
        if !one_x {
            return Err((505, "HTTP version not supported"));
        }
    }
    Ok(())
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
        check(&h, Some(raw), &limits())
    }

    #[test]
    fn refusals() {
        assert!(req(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
        assert_eq!(req(b"GET / HTTP/1.1\nHost: a\n\n").unwrap_err().0, 400);
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
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(req(long.as_bytes()).unwrap_err().0, 414);
        assert!(check_raw(b"GET / HTTP/1.2\r\n\r\n", &limits()).is_ok());
        assert_eq!(
            check_raw(b"GET / HTTP/2.0\r\n\r\n", &limits())
                .unwrap_err()
                .0,
            505
        );
        assert_eq!(
            check_raw(b"GET /a\x01 HTTP/1.1\r\n\r\n", &limits())
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            check_transfer_encoding(b"transfer-encoding: chunked, chunked")
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            check_transfer_encoding(b"transfer-encoding: gzip, chunked")
                .unwrap_err()
                .0,
            501
        );
        assert_eq!(
            check_transfer_encoding(b"transfer-encoding: identity, chunked")
                .unwrap_err()
                .0,
            400
        );
        assert!(check_transfer_encoding(b"transfer-encoding: chunked").is_ok());
        // Field names in any case; the value too.
        assert!(check_transfer_encoding(b"Transfer-Encoding: Chunked\r").is_ok());
        assert_eq!(
            check_transfer_encoding(b"TRANSFER-ENCODING: GZIP, chunked")
                .unwrap_err()
                .0,
            501
        );
        assert_eq!(
            check_transfer_encoding(b"transfer-encoding: chunked\ntransfer-encoding: chunked")
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
