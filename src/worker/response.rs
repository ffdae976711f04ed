//! Writing a WSGI response back to the edge as HTTP/1.1: status line and
//! headers once, then the body framed by Content-Length when it is known and
//! chunked otherwise. Socket writes happen with the GIL released.

use pyo3::Python;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// Body bytes gathered before a socket write (fewer syscalls for lists).
const FLUSH_AT: usize = 64 * 1024;

enum Framing {
    /// HEAD, 1xx, 204, 304: whatever the app yields is dropped.
    NoBody,
    Length {
        remaining: u64,
    },
    Chunked,
}

pub struct ResponseWriter {
    /// Shared with the connection: no dup per request.
    stream: Arc<UnixStream>,
    buf: Vec<u8>,
    framing: Framing,
    pub head_request: bool,
    pub keep_alive: bool,
    /// Set once a write to the edge failed: the client is gone.
    pub broken: bool,
    pub head_sent: bool,
    pub status_code: u16,
    truncated_warned: bool,
}

impl ResponseWriter {
    pub fn new(stream: Arc<UnixStream>, head_request: bool, keep_alive: bool) -> Self {
        ResponseWriter {
            stream,
            buf: Vec::with_capacity(4096),
            framing: Framing::NoBody,
            head_request,
            keep_alive,
            broken: false,
            head_sent: false,
            status_code: 0,
            truncated_warned: false,
        }
    }

    /// Serialises the status line and headers. `known_len` is the body length
    /// when the server could compute it (a list of bytes), used when the app
    /// gave no Content-Length.
    pub fn send_head(
        &mut self,
        status: &str,
        headers: &[(String, String)],
        known_len: Option<u64>,
    ) {
        let code: u16 = status.get(..3).and_then(|c| c.parse().ok()).unwrap_or(500);
        self.status_code = code;
        let app_len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok());
        let mut extra = String::new();
        self.framing = if self.head_request || code < 200 || code == 204 || code == 304 {
            Framing::NoBody
        } else if let Some(n) = app_len {
            Framing::Length { remaining: n }
        } else if let Some(n) = known_len {
            extra = format!("Content-Length: {n}\r\n");
            Framing::Length { remaining: n }
        } else {
            extra = "Transfer-Encoding: chunked\r\n".into();
            Framing::Chunked
        };
        let b = &mut self.buf;
        b.extend_from_slice(b"HTTP/1.1 ");
        b.extend_from_slice(status.as_bytes());
        b.extend_from_slice(b"\r\n");
        for (k, v) in headers {
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(b": ");
            // Header values are latin-1 str in WSGI; send the same bytes.
            b.extend(v.chars().map(|c| c as u32 as u8));
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(extra.as_bytes());
        if !self.keep_alive {
            b.extend_from_slice(b"Connection: close\r\n");
        }
        b.extend_from_slice(b"\r\n");
        self.head_sent = true;
    }

    /// Queues body bytes according to the framing.
    pub fn body(&mut self, py: Python<'_>, data: &[u8]) {
        if data.is_empty() || self.broken {
            return;
        }
        match &mut self.framing {
            Framing::NoBody => {}
            Framing::Length { remaining } => {
                let take = (data.len() as u64).min(*remaining) as usize;
                *remaining -= take as u64;
                self.buf.extend_from_slice(&data[..take]);
                if take < data.len() && !self.truncated_warned {
                    self.truncated_warned = true;
                    tracing::warn!(
                        "app sent more bytes than its Content-Length; the extra was dropped"
                    );
                }
            }
            Framing::Chunked => {
                self.buf
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                self.buf.extend_from_slice(data);
                self.buf.extend_from_slice(b"\r\n");
            }
        }
        if self.buf.len() >= FLUSH_AT {
            self.flush(py);
        }
    }

    /// Ends the body. A body shorter than its Content-Length cannot be
    /// repaired: the connection is closed so the edge sees the truncation.
    pub fn finish(&mut self, py: Python<'_>) {
        match self.framing {
            Framing::Chunked => self.buf.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length { remaining } if remaining > 0 => {
                tracing::error!("app sent {remaining} bytes fewer than its Content-Length");
                self.keep_alive = false;
            }
            _ => {}
        }
        self.flush(py);
    }

    /// Abandons a response whose head is already sent (app error mid-body).
    pub fn abort(&mut self, py: Python<'_>) {
        self.keep_alive = false;
        self.flush(py);
    }

    pub fn flush(&mut self, py: Python<'_>) {
        if self.buf.is_empty() || self.broken {
            self.buf.clear();
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let mut stream: &UnixStream = &self.stream;
        let res: io::Result<()> = py.detach(|| stream.write_all(&buf));
        if res.is_err() {
            self.broken = true;
            self.keep_alive = false;
        }
        self.buf = buf;
        self.buf.clear();
    }

    /// The app failed: a 500 if nothing was sent yet, otherwise cut the
    /// response short (the edge then sees the truncation and tells the client).
    pub fn fail(&mut self, py: Python<'_>) {
        if self.head_sent {
            self.abort(py)
        } else {
            self.error(py, "500 Internal Server Error")
        }
    }

    /// A complete error response, for failures before the head was sent.
    pub fn error(&mut self, py: Python<'_>, status: &str) {
        let body = format!("{status}\n");
        let headers = vec![
            (
                "Content-Type".to_string(),
                "text/plain; charset=utf-8".to_string(),
            ),
            ("Content-Length".to_string(), body.len().to_string()),
        ];
        self.buf.clear();
        self.send_head(status, &headers, None);
        self.body(py, body.as_bytes());
        self.finish(py);
    }
}
