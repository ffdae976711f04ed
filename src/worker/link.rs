//! One connection from the edge, as the worker reads it: the next request
//! to run, or what to answer without running anything (a withdrawn
//! request, a malformed one, a body that could not be stored).

use super::quiet_read::QuietRead;
use super::request::{read_request, ReadError, Request};
use super::withdrawals::{LinkTurns, Withdrawals};
use crate::wire::withdraw;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use tracing::debug;

pub struct Link {
    reader: BufReader<QuietRead>,
    /// The response side, shared with each request's writer (which Python
    /// may keep alive past the request), without a dup and close per request.
    stream: Arc<UnixStream>,
    /// Where the edge's cancels are decided (`threads = 1` only).
    withdrawals: Option<Arc<Withdrawals>>,
    /// This link's turns, once the edge has named it.
    turns: Option<LinkTurns>,
    /// Requests read on it so far.
    read: u64,
}

/// What the connection holds next.
pub enum Next {
    Run(Request),
    /// Nothing to read now (only when reading without waiting).
    Idle,
    /// The edge closed it, or it must close (answered a bad request).
    Close,
}

impl Link {
    pub fn new(stream: UnixStream, withdrawals: Option<Arc<Withdrawals>>) -> io::Result<Link> {
        let read_half = stream.try_clone()?;
        Ok(Link {
            reader: BufReader::with_capacity(64 * 1024, QuietRead::new(read_half)),
            stream: Arc::new(stream),
            withdrawals,
            turns: None,
            read: 0,
        })
    }

    pub fn stream(&self) -> &Arc<UnixStream> {
        &self.stream
    }

    /// Bytes read from the socket and not yet used.
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// The next request to run. With `wait` false an empty socket gives
    /// `Idle` at once; once a request has begun, its rest is waited for
    /// (the edge writes a request whole, never in pieces over time).
    /// `hung_up`: the edge had closed the link before this read, so nobody
    /// waits for what is on it (a request sent ahead whose client left).
    pub fn next(&mut self, wait: bool, hung_up: bool) -> Next {
        loop {
            self.reader.get_mut().wait = wait;
            let filled = self.reader.fill_buf().map(|b| !b.is_empty());
            self.reader.get_mut().wait = true;
            match filled {
                Ok(true) => {}
                Ok(false) => return Next::Close,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Idle,
                Err(e) => {
                    debug!("connection from the edge failed: {e}");
                    return Next::Close;
                }
            }
            if withdraw::starts_link(self.reader.buffer()) {
                if let Err(e) = self.read_link_line() {
                    debug!("bad link line from the edge: {e}");
                    return Next::Close;
                }
                continue;
            }
            match read_request(&mut self.reader) {
                Ok(req) => {
                    self.read += 1;
                    if hung_up {
                        debug!("{} {} abandoned before it ran", req.method, req.target);
                        continue;
                    }
                    if self.turns.as_ref().is_some_and(|t| !t.begin(self.read)) {
                        debug!("{} {} taken back before it ran", req.method, req.target);
                        // Said on the link too: an edge that gave up waiting
                        // for the cancel's answer learns it here.
                        let _ = (&*self.stream).write_all(withdraw::WITHDRAWN);
                        continue;
                    }
                    return Next::Run(req);
                }
                Err(e) => {
                    self.refuse(e);
                    return Next::Close;
                }
            }
        }
    }

    /// `~link <id>`: the name the edge's cancels will use for this link.
    fn read_link_line(&mut self) -> io::Result<()> {
        let mut line = Vec::with_capacity(withdraw::MAX_LINE);
        (&mut self.reader)
            .take(withdraw::MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        let id = withdraw::parse_link(&line)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a link line"))?;
        self.turns = self.withdrawals.as_ref().map(|w| w.register(id));
        Ok(())
    }

    /// Answers what could not be read as a request; the connection closes.
    fn refuse(&self, e: ReadError) {
        let answer = match e {
            ReadError::Closed => return,
            ReadError::Io(e) => {
                debug!("connection from the edge failed: {e}");
                return;
            }
            ReadError::Bad(status, why) => {
                debug!("bad request from the edge: {why}");
                let reason = if status == 431 {
                    "Request Header Fields Too Large"
                } else {
                    "Bad Request"
                };
                format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            }
            ReadError::Spool(e) => {
                let dir = std::env::temp_dir();
                tracing::error!(
                    "cannot spool a request body to a temp file in {}: {e}; answering 507",
                    dir.display()
                );
                let body = format!(
                    "Insufficient Storage: the server cannot store the request body ({e})\n"
                );
                format!(
                    "HTTP/1.1 507 Insufficient Storage\r\nContent-Type: text/plain; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
        };
        let _ = (&*self.stream).write_all(answer.as_bytes());
    }

    pub fn close(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
    }

    #[test]
    fn a_named_link_skips_what_the_edge_took_back() {
        let (mut edge, worker) = UnixStream::pair().unwrap();
        let all = Arc::new(Withdrawals::default());
        let mut link = Link::new(worker, Some(all.clone())).unwrap();
        edge.write_all(&[withdraw::link_line(4), get("/a")].concat())
            .unwrap();
        assert!(matches!(link.next(false, false), Next::Run(r) if r.target == "/a"));
        assert!(matches!(link.next(false, false), Next::Idle));
        // The second request is taken back before this thread reads it.
        assert_eq!(all.cancel(4, 2), withdraw::WITHDRAWN);
        edge.write_all(&[get("/b"), get("/c")].concat()).unwrap();
        assert!(matches!(link.next(false, false), Next::Run(r) if r.target == "/c"));
        drop(edge);
        assert!(matches!(link.next(true, false), Next::Close));
    }

    #[test]
    fn an_unnamed_link_runs_everything() {
        let (mut edge, worker) = UnixStream::pair().unwrap();
        let mut link = Link::new(worker, None).unwrap();
        edge.write_all(&[get("/a"), get("/b")].concat()).unwrap();
        assert!(matches!(link.next(false, false), Next::Run(r) if r.target == "/a"));
        assert!(link.has_buffered());
        assert!(matches!(link.next(false, false), Next::Run(r) if r.target == "/b"));
        assert!(matches!(link.next(false, false), Next::Idle));
    }
}
