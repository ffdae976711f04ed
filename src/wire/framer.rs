//! A worker's response to the edge, framed (sans-IO: bytes in, bytes
//! appended to an output buffer). The WSGI and ASGI workers both write
//! through it, so a response is framed by one set of rules: the app's
//! Content-Length when it gave one, a length the server knows otherwise,
//! else chunked; no body at all for HEAD, 1xx, 204 and 304.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Not started, or HEAD/1xx/204/304: whatever the app sends is dropped.
    NoBody,
    Length {
        remaining: u64,
    },
    Chunked,
}

pub struct Framer {
    framing: Framing,
    head_request: bool,
    /// Whether the connection to the edge can carry another request.
    pub keep_alive: bool,
    pub status: u16,
    /// The app's own Content-Length, seen among its headers.
    app_len: Option<u64>,
    truncated_warned: bool,
    /// What the request costs, told in the receipt after the body.
    pub meter: super::receipt::Meter,
}

impl Framer {
    pub fn new(head_request: bool, keep_alive: bool) -> Self {
        Framer {
            framing: Framing::NoBody,
            head_request,
            keep_alive,
            status: 0,
            app_len: None,
            truncated_warned: false,
            meter: super::receipt::Meter::none(),
        }
    }

    /// The status line; `line` is e.g. `200 OK`.
    pub fn status_line(&mut self, out: &mut Vec<u8>, status: u16, line: &[u8]) {
        self.status = status;
        self.app_len = None;
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }

    /// One of the app's fields (already checked: a token name, a value
    /// without CR/LF, not hop-by-hop).
    pub fn field(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"content-length") {
            self.app_len = crate::proto::length::parse_one(value.trim_ascii());
        }
        write_field(out, name, value);
    }

    /// Ends the head, choosing the framing. `known_len` is the body's
    /// length when the server knows it (a list of bytes, a single body
    /// message), used when the app gave no Content-Length.
    pub fn end_head(&mut self, out: &mut Vec<u8>, known_len: Option<u64>) {
        let s = self.status;
        self.framing = if self.head_request || s < 200 || s == 204 || s == 304 {
            Framing::NoBody
        } else if let Some(n) = self.app_len {
            Framing::Length { remaining: n }
        } else if let Some(n) = known_len {
            out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
            Framing::Length { remaining: n }
        } else {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            Framing::Chunked
        };
        if !self.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Appends body bytes according to the framing.
    pub fn body(&mut self, out: &mut Vec<u8>, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match &mut self.framing {
            Framing::NoBody => {}
            Framing::Length { remaining } => {
                let take = (data.len() as u64).min(*remaining) as usize;
                *remaining -= take as u64;
                out.extend_from_slice(&data[..take]);
                if take < data.len() && !self.truncated_warned {
                    self.truncated_warned = true;
                    tracing::warn!(
                        "app sent more bytes than its Content-Length; the extra was dropped"
                    );
                }
            }
            Framing::Chunked => {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Body bytes the framing still expects (0 when it takes none), or None
    /// when chunked: how much of a file to send around the framer.
    pub fn expects(&self) -> Option<u64> {
        match self.framing {
            Framing::NoBody => Some(0),
            Framing::Length { remaining } => Some(remaining),
            Framing::Chunked => None,
        }
    }

    /// Counts body bytes written around the framer (a file by sendfile).
    pub fn sent_around(&mut self, n: u64) {
        if let Framing::Length { remaining } = &mut self.framing {
            *remaining -= n.min(*remaining);
        }
    }

    /// Ends a chunked body with trailer fields (already checked, as a
    /// head's). Any other framing has no room for them: they are dropped,
    /// and the body ends as `finish` ends it.
    pub fn finish_with_trailers(&mut self, out: &mut Vec<u8>, fields: &[(Vec<u8>, Vec<u8>)]) {
        if self.framing != Framing::Chunked {
            if !fields.is_empty() {
                tracing::warn!("app sent trailers on a response with a Content-Length; dropped");
            }
            return self.finish(out);
        }
        out.extend_from_slice(b"0\r\n");
        for (name, value) in fields {
            write_field(out, name, value);
        }
        out.extend_from_slice(b"\r\n");
        self.framing = Framing::NoBody;
        self.meter.receipt().encode(out);
    }

    /// Ends the body. A body shorter than its Content-Length cannot be
    /// repaired: the connection is marked to close, so the edge sees the
    /// truncation.
    /// Then the receipt, unless the body is short (it would be read as
    /// body bytes).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self.framing {
            Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length { remaining } if remaining > 0 => {
                tracing::error!("app sent {remaining} bytes fewer than its Content-Length");
                self.keep_alive = false;
                self.framing = Framing::NoBody;
                return;
            }
            _ => {}
        }
        self.framing = Framing::NoBody;
        self.meter.receipt().encode(out);
    }
}

/// `name: value` and its line end (both already checked).
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(
        f: &mut Framer,
        known: Option<u64>,
        fields: &[(&str, &str)],
        body: &[&str],
    ) -> String {
        let mut out = Vec::new();
        f.status_line(&mut out, 200, b"200 OK");
        for (k, v) in fields {
            f.field(&mut out, k.as_bytes(), v.as_bytes());
        }
        f.end_head(&mut out, known);
        for b in body {
            f.body(&mut out, b.as_bytes());
        }
        f.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        // Every complete response ends with the worker's receipt (nothing
        // measured here).
        match text.strip_suffix("~- - -\n") {
            Some(response) => response.to_string(),
            None => format!("{text}(no receipt)"),
        }
    }

    #[test]
    fn frames_by_the_apps_length_a_known_length_or_chunks() {
        let mut f = Framer::new(false, true);
        let r = response(&mut f, None, &[("Content-Length", "3")], &["ab", "cdef"]);
        assert_eq!(r, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
        let r = response(&mut Framer::new(false, true), Some(2), &[], &["hi"]);
        assert_eq!(r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
        let r = response(&mut Framer::new(false, false), None, &[], &["hi"]);
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        );
        let r = response(&mut Framer::new(true, true), None, &[], &["hi"]);
        assert_eq!(r, "HTTP/1.1 200 OK\r\n\r\n");
    }

    #[test]
    fn a_short_body_closes_the_connection() {
        let mut f = Framer::new(false, true);
        let r = response(&mut f, None, &[("content-length", "10")], &["abc"]);
        assert!(!f.keep_alive);
        // No receipt: its bytes would pass for the missing body.
        assert!(r.ends_with("abc(no receipt)"), "{r}");
    }
}
