//! Writing a WSGI response back to the edge as HTTP/1.1, framed by
//! `wire::framer` (shared with the ASGI worker). Socket writes happen with
//! the GIL released.

use crate::wire::framer::Framer;
use pyo3::Python;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// Body bytes gathered before a socket write (fewer syscalls for lists).
const FLUSH_AT: usize = 64 * 1024;

pub struct ResponseWriter {
    /// Shared with the connection: no dup per request.
    stream: Arc<UnixStream>,
    buf: Vec<u8>,
    framer: Framer,
    pub keep_alive: bool,
    /// Set once a write to the edge failed: the client is gone.
    pub broken: bool,
    pub head_sent: bool,
}

impl ResponseWriter {
    /// `costs`: measure the request for the receipt (`[log] request_costs`).
    pub fn new(stream: Arc<UnixStream>, head_request: bool, keep_alive: bool, costs: bool) -> Self {
        let mut framer = Framer::new(head_request, keep_alive);
        // Made as the request starts: the receipt counts the whole request.
        if costs {
            framer.meter = crate::wire::receipt::Meter::start();
        }
        ResponseWriter {
            stream,
            buf: Vec::with_capacity(4096),
            framer,
            keep_alive,
            broken: false,
            head_sent: false,
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
        let b = &mut self.buf;
        self.framer.status_line(b, code, status.as_bytes());
        let mut value = Vec::new();
        for (k, v) in headers {
            // Header values are latin-1 str in WSGI; send the same bytes.
            value.clear();
            value.extend(v.chars().map(|c| c as u32 as u8));
            self.framer.field(b, k.as_bytes(), &value);
        }
        self.framer.end_head(b, known_len);
        self.head_sent = true;
    }

    /// Queues body bytes according to the framing.
    pub fn body(&mut self, py: Python<'_>, data: &[u8]) {
        if self.broken {
            return;
        }
        self.framer.body(&mut self.buf, data);
        if self.buf.len() >= FLUSH_AT {
            self.flush(py);
        }
    }

    /// Ends the body (a short one closes the connection).
    pub fn finish(&mut self, py: Python<'_>) {
        self.framer.finish(&mut self.buf);
        self.keep_alive &= self.framer.keep_alive;
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
