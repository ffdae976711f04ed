//! The WSGI worker's socket side of a request: read one whole HTTP/1.1
//! request from the edge, body included, before any Python runs. The head's
//! rules are `wire::request`'s, shared with the ASGI worker.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};

use crate::wire::{self, request};
/// Bodies above this are spooled to an anonymous temp file, not memory.
pub const SPOOL_ABOVE: u64 = 1 << 20;

pub struct Request {
    pub method: String,
    /// The raw request target, e.g. `/a%20b?x=1`.
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Body,
    pub keep_alive: bool,
}

pub enum Body {
    Memory(Vec<u8>),
    File(File, u64),
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Memory(v) => v.len() as u64,
            Body::File(_, n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The edge closed the connection between requests.
    Closed,
    Io(io::Error),
    /// Malformed request: answer 400 (or the given status) and close.
    Bad(u16, &'static str),
    /// The body could not be written to its temp file (a full disk, say).
    /// It was read to its end all the same, so the edge can read the answer
    /// rather than see a broken pipe and blame the worker.
    Spool(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Where the files the edge passes with request heads are taken from.
pub trait PassedFiles {
    fn take_file(&mut self) -> Option<File>;
}

impl PassedFiles for super::quiet_read::QuietRead {
    fn take_file(&mut self) -> Option<File> {
        super::quiet_read::QuietRead::take_file(self)
    }
}

/// Reads the next request. Blocks only on the edge, never while holding the GIL.
pub fn read_request<R: Read + PassedFiles>(r: &mut BufReader<R>) -> Result<Request, ReadError> {
    let head = read_head(r)?;
    let mut head =
        request::parse(&head).map_err(|request::Bad(status, why)| ReadError::Bad(status, why))?;
    let len = head.content_length;
    let passed = head.headers.len();
    head.headers
        .retain(|(name, _)| !name.eq_ignore_ascii_case(wire::BODY_FD));
    let body = if head.headers.len() < passed {
        passed_body(r.get_mut().take_file(), len)?
    } else {
        read_body(r, len)?
    };
    Ok(Request {
        method: head.method,
        target: head.target,
        headers: head.headers,
        body,
        keep_alive: head.keep_alive,
    })
}

/// A body the edge spooled and passed as its file (`wire::BODY_FD`): read
/// from its start, since a rerun passes the same open file again.
fn passed_body(file: Option<File>, len: u64) -> Result<Body, ReadError> {
    let mut file = file.ok_or(ReadError::Bad(
        400,
        "the body's file did not come with its head",
    ))?;
    file.rewind()?;
    if file.metadata()?.len() < len {
        return Err(ReadError::Bad(
            400,
            "the body's file is shorter than its length",
        ));
    }
    Ok(Body::File(file, len))
}

fn read_head<R: Read>(r: &mut BufReader<R>) -> Result<Vec<u8>, ReadError> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return if head.is_empty() {
                Err(ReadError::Closed)
            } else {
                Err(ReadError::Bad(400, "connection closed inside the head"))
            };
        }
        // Look for the blank line, also across the previous chunk's end.
        let start = head.len().saturating_sub(3);
        head.extend_from_slice(buf);
        let consumed = buf.len();
        if let Some(pos) = request::head_end(&head[start..]) {
            let end = start + pos;
            let extra = head.len() - end;
            r.consume(consumed - extra);
            head.truncate(end);
            return Ok(head);
        }
        r.consume(consumed);
        if head.len() > request::MAX_HEAD {
            return Err(ReadError::Bad(431, "request head too large"));
        }
    }
}

fn read_body<R: Read>(r: &mut BufReader<R>, len: u64) -> Result<Body, ReadError> {
    if len <= SPOOL_ABOVE {
        // Not vec![0; len]: a zeroed allocation comes back as fresh pages.
        let mut v = Vec::with_capacity(len as usize);
        r.by_ref().take(len).read_to_end(&mut v)?;
        if v.len() as u64 != len {
            return Err(ReadError::Bad(400, "connection closed inside the body"));
        }
        return Ok(Body::Memory(v));
    }
    let mut body = r.by_ref().take(len);
    let spooled = tempfile::tempfile().and_then(|mut f| {
        io::copy(&mut body, &mut f)?;
        f.flush()?;
        f.rewind()?;
        Ok(f)
    });
    // A failed write leaves the rest unread: read it away first.
    let rest = io::copy(&mut body, &mut io::sink())?;
    if body.limit() != 0 || rest > len {
        return Err(ReadError::Bad(400, "connection closed inside the body"));
    }
    match spooled {
        Ok(f) => Ok(Body::File(f, len)),
        Err(e) => Err(ReadError::Spool(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    impl PassedFiles for UnixStream {
        fn take_file(&mut self) -> Option<File> {
            None
        }
    }

    fn parse(raw: &[u8]) -> Result<Request, ReadError> {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(raw).unwrap();
        drop(a);
        read_request(&mut BufReader::new(b))
    }

    #[test]
    fn reads_head_and_body() {
        let r = parse(b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloEXTRA")
            .unwrap();
        assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/x?y=1"));
        assert!(matches!(r.body, Body::Memory(ref v) if v == b"hello"));
        assert!(r.keep_alive);
    }

    #[test]
    fn refuses_ambiguous_framing() {
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Err(ReadError::Bad(400, _))
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            Err(ReadError::Bad(400, _))
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\na"),
            Err(ReadError::Bad(400, _))
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab"),
            Err(ReadError::Bad(400, _))
        ));
        assert!(matches!(parse(b""), Err(ReadError::Closed)));
    }

    #[test]
    fn spools_large_bodies() {
        let n = SPOOL_ABOVE as usize + 10;
        let mut raw = format!("PUT / HTTP/1.1\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        raw.extend(std::iter::repeat_n(b'x', n));
        let (mut a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || a.write_all(&raw));
        let r = read_request(&mut BufReader::new(b)).unwrap();
        t.join().unwrap().unwrap();
        assert!(matches!(r.body, Body::File(_, len) if len == n as u64));
    }

    /// A head that says its body is a passed file takes the file that came
    /// with it, read from its start; the marker does not reach the app. A
    /// head that says so with no file is refused.
    #[test]
    fn takes_a_body_passed_as_a_file() {
        use crate::worker::quiet_read::QuietRead;
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello, file").unwrap();
        let head = b"PUT /f HTTP/1.1\r\nContent-Length: 11\r\nx-corral-body-fd: 1\r\n\r\n";
        let (a, b) = UnixStream::pair().unwrap();
        let fds = [file.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [IoSlice::new(head)];
        sendmsg::<()>(a.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
        (&a).write_all(head).unwrap();
        let mut reader = BufReader::new(QuietRead::new(b));
        let r = read_request(&mut reader).unwrap();
        assert!(r.headers.iter().all(|(n, _)| n != wire::BODY_FD));
        let Body::File(mut f, 11) = r.body else {
            panic!("not the passed file")
        };
        let mut got = String::new();
        f.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello, file");
        assert!(matches!(
            read_request(&mut reader),
            Err(ReadError::Bad(400, _))
        ));
    }
}
