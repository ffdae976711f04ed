//! The edge's side of the edge→worker hop: HTTP/1.1 over a Unix socket.
//!
//! The edge always re-frames: a request goes out with the edge's own head
//! and a Content-Length for the body it already holds in full, so a worker
//! can never be desynchronised by what a client sent. Responses come back
//! with Content-Length or chunked framing, decoded here.

use crate::edge::app::body_fd;
use crate::edge::app::body_rest::{self, BodyRest};
use crate::edge::app::pool::Conn;
use crate::edge::app::request_body::RequestBody;
use crate::wire::receipt::{self, Receipt};
use bytes::{Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const MAX_RESPONSE_HEAD: usize = 256 * 1024;
/// Fields parsed without an allocation; more take one.
const MAX_RESPONSE_HEADERS: usize = 64;
pub const READ_CHUNK: usize = 64 * 1024;

pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    /// The Content-Length the worker declared, kept when the body is empty
    /// by rule (HEAD): it still says what GET would send.
    pub declared_len: Option<u64>,
    /// The worker will close after this response.
    pub close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Why an exchange failed, which decides between retrying and a 502.
#[derive(Debug)]
pub enum ExchangeError {
    /// The worker never got the whole request, so the app did not run:
    /// safe to send the request to another worker.
    NotDelivered(io::Error),
    /// The worker had the request and went away before its answer's head
    /// was complete (killed, crashed, its connection broken): the app may
    /// have run it, but nothing reached the client. An idempotent request
    /// may run again elsewhere (`[app] retry_idempotent`).
    Vanished(String),
    /// The worker got the request and then failed (a bad response).
    Failed(String),
    /// The edge itself could not open a connection (out of file
    /// descriptors): no worker is to blame.
    EdgeOutOfFds(io::Error),
    /// The worker skipped the request: it was taken back
    /// (`wire::withdraw`) after the edge stopped waiting for the answer.
    Withdrawn,
}

impl ExchangeError {
    /// The same failure for a request the app may have begun: not
    /// delivered becomes vanished (a 502 unless the request is idempotent).
    pub fn taken(self) -> Self {
        match self {
            ExchangeError::NotDelivered(e) => ExchangeError::Vanished(format!(
                "the worker failed while its app had the request ({e})"
            )),
            other => other,
        }
    }

    /// Sorts a failed connect to a worker's socket.
    pub fn from_connect(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => ExchangeError::EdgeOutOfFds(e),
            _ => ExchangeError::NotDelivered(e),
        }
    }
}

/// How a request goes to a worker.
pub struct Sending<'a> {
    pub head: &'a [u8],
    pub body: &'a RequestBody,
    /// Name the link first (`wire::withdraw`): a worker that takes
    /// requests ahead.
    pub name_link: bool,
    /// A spooled body may go as its open file (`body_fd`): WSGI workers.
    pub pass_file: bool,
}

/// Writes the request head and as much of the body as the socket takes
/// now (or the head with the spooled body's file, `body_fd`); returns
/// which request it is on this connection (1 for the first) and the rest
/// of the body, if any, to write while the answer is read. A connection to
/// a worker that takes requests ahead is named first, once.
pub async fn send(
    conn: &mut Conn,
    out: Sending<'_>,
    written: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(u64, Option<BodyRest>), ExchangeError> {
    let stream = conn.get_mut();
    if let Some(line) = out.name_link.then(|| stream.name_line()).flatten() {
        stream
            .write_all(&line)
            .await
            .map_err(ExchangeError::NotDelivered)?;
    }
    let nth = stream.count_request();
    let with_file = match out.body {
        RequestBody::File(file, _) if out.pass_file => body_fd::send_head(stream, out.head, file)
            .await
            .map_err(ExchangeError::NotDelivered)?,
        _ => body_fd::Sent::Refused,
    };
    if let body_fd::Sent::Refused = with_file {
        stream
            .write_all(out.head)
            .await
            .map_err(ExchangeError::NotDelivered)?;
    }
    // The worker orders requests by their heads; the next one may go now.
    if let Some(written) = written {
        let _ = written.send(());
    }
    let rest = match with_file {
        body_fd::Sent::WithFile => None,
        body_fd::Sent::Refused => {
            body_rest::write_now(stream, out.body).map_err(ExchangeError::NotDelivered)?
        }
    };
    Ok((nth, rest))
}

/// Reads a response head. No bytes at all before EOF means the worker died
/// with our request in hand. A reset, on a Unix socket, means the worker
/// closed it with our request still unread: the app never saw it.
pub async fn read_head(conn: &mut Conn, head_request: bool) -> Result<ResponseHead, ExchangeError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let n = match read_line(conn, &mut buf).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && buf.is_empty() => {
                return Err(ExchangeError::NotDelivered(e))
            }
            Err(e) => return Err(ExchangeError::Vanished(e.to_string())),
        };
        if buf == crate::wire::withdraw::WITHDRAWN {
            return Err(ExchangeError::Withdrawn);
        }
        if n == 0 {
            return Err(ExchangeError::Vanished(if buf.is_empty() {
                "its connection closed with no answer; the master logs why it died".into()
            } else {
                "worker closed the connection inside the response head".into()
            }));
        }
        if buf.ends_with(b"\r\n\r\n") {
            break;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(ExchangeError::Failed(
                "response head from the worker is too large".into(),
            ));
        }
    }
    // The app may send as many fields as fit the head (an app is not a
    // client to defend against): a few hundred are not rare.
    let lines = buf.iter().filter(|&&b| b == b'\n').count();
    let mut few = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut many;
    let headers: &mut [httparse::Header] = if lines <= MAX_RESPONSE_HEADERS {
        &mut few
    } else {
        many = vec![httparse::EMPTY_HEADER; lines];
        &mut many
    };
    let mut resp = httparse::Response::new(headers);
    match resp.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(ExchangeError::Failed(
                "malformed response head from the worker".into(),
            ))
        }
    }
    let status = resp.code.unwrap_or(502);
    let mut framing = Framing::UntilClose;
    let mut declared_len = None;
    let mut close = resp.version == Some(0);
    let mut out = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "transfer-encoding" => {
                if h.value.eq_ignore_ascii_case(b"chunked") {
                    framing = Framing::Chunked;
                }
                continue;
            }
            "content-length" if framing != Framing::Chunked => {
                let n = crate::proto::length::parse_one(h.value).ok_or_else(|| {
                    ExchangeError::Failed("bad Content-Length from the worker".into())
                })?;
                framing = Framing::Length(n);
                declared_len = Some(n);
            }
            "connection" => {
                close |= h.value.eq_ignore_ascii_case(b"close");
                continue;
            }
            "keep-alive" => continue,
            _ => {}
        }
        out.push((h.name.to_string(), h.value.to_vec()));
    }
    if head_request || status < 200 || status == 204 || status == 304 {
        framing = Framing::Empty;
    }
    if framing == Framing::UntilClose {
        close = true;
    }
    Ok(ResponseHead {
        status,
        headers: out,
        framing,
        declared_len,
        close,
    })
}

/// The worker's receipt after a complete response (`wire::receipt`).
pub async fn read_receipt(conn: &mut Conn) -> io::Result<Receipt> {
    let mut line = Vec::with_capacity(32);
    let mut limited = conn.take(receipt::MAX_LEN as u64);
    limited.read_until(b'\n', &mut line).await?;
    Receipt::decode(&line).ok_or_else(|| {
        let what = String::from_utf8_lossy(&line);
        io::Error::new(io::ErrorKind::InvalidData, format!("bad receipt {what:?}"))
    })
}

async fn read_line(conn: &mut Conn, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut limited = conn.take((MAX_RESPONSE_HEAD + 1) as u64);
    limited.read_until(b'\n', buf).await
}

/// Streams a response body chunk by chunk, whatever its framing.
pub struct BodyReader {
    framing: Framing,
    remaining: u64,
    chunk_left: u64,
    done: bool,
    /// The chunked body's trailer fields (ASGI `http.response.trailers`).
    pub trailers: Vec<(String, Vec<u8>)>,
}

/// A trailer section larger than this is a broken worker.
const MAX_TRAILERS: usize = 64 * 1024;

impl BodyReader {
    pub fn new(framing: Framing) -> Self {
        let remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        BodyReader {
            framing,
            remaining,
            chunk_left: 0,
            done: matches!(framing, Framing::Empty) || framing == Framing::Length(0),
            trailers: Vec::new(),
        }
    }

    /// Whether the body ended cleanly (the connection may be reused).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next piece of body, `None` at its end. Short bodies are errors.
    pub async fn next(&mut self, conn: &mut Conn) -> io::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        match self.framing {
            Framing::Empty => Ok(None),
            Framing::Length(_) => {
                let want = self.remaining.min(READ_CHUNK as u64) as usize;
                let data = read_some(conn, want).await?;
                if data.is_empty() {
                    return Err(truncated());
                }
                self.remaining -= data.len() as u64;
                self.done = self.remaining == 0;
                Ok(Some(data))
            }
            Framing::UntilClose => {
                let data = read_some(conn, READ_CHUNK).await?;
                if data.is_empty() {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Some(data))
            }
            Framing::Chunked => self.next_chunked(conn).await,
        }
    }

    async fn next_chunked(&mut self, conn: &mut Conn) -> io::Result<Option<Bytes>> {
        loop {
            if self.chunk_left > 0 {
                let want = self.chunk_left.min(READ_CHUNK as u64) as usize;
                let data = read_some(conn, want).await?;
                if data.is_empty() {
                    return Err(truncated());
                }
                self.chunk_left -= data.len() as u64;
                if self.chunk_left == 0 {
                    expect_crlf(conn).await?;
                }
                return Ok(Some(data));
            }
            let mut line = Vec::new();
            let n = conn.take(1024).read_until(b'\n', &mut line).await?;
            if n == 0 || !line.ends_with(b"\r\n") {
                return Err(truncated());
            }
            let size_str = std::str::from_utf8(&line[..line.len() - 2]).map_err(|_| bad_chunk())?;
            let size_str = size_str.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_str, 16).map_err(|_| bad_chunk())?;
            if size == 0 {
                self.trailers = read_trailers(conn).await?;
                self.done = true;
                return Ok(None);
            }
            self.chunk_left = size;
        }
    }
}

/// The trailer section after the last chunk, up to its blank line.
async fn read_trailers(conn: &mut Conn) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut section = Vec::new();
    loop {
        let start = section.len();
        let n = conn.take(8192).read_until(b'\n', &mut section).await?;
        if n == 0 {
            return Err(truncated());
        }
        if &section[start..] == b"\r\n" {
            break;
        }
        if section.len() > MAX_TRAILERS {
            return Err(bad_chunk());
        }
    }
    if section.len() == 2 {
        return Ok(Vec::new());
    }
    let mut fields = [httparse::EMPTY_HEADER; 64];
    match httparse::parse_headers(&section, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => Ok(fields
            .iter()
            .map(|f| (f.name.to_string(), f.value.to_vec()))
            .collect()),
        _ => Err(bad_chunk()),
    }
}

async fn read_some(conn: &mut Conn, max: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(max);
    let mut limited = conn.take(max as u64);
    limited.read_buf(&mut buf).await?;
    Ok(buf.freeze())
}

async fn expect_crlf(conn: &mut Conn) -> io::Result<()> {
    let mut crlf = [0u8; 2];
    conn.read_exact(&mut crlf).await?;
    if &crlf != b"\r\n" {
        return Err(bad_chunk());
    }
    Ok(())
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the worker's response broke off (the app raised mid-response, or the worker died: \
         its log above says which)",
    )
}

fn bad_chunk() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "malformed chunked encoding from the worker",
    )
}
