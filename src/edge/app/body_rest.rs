//! The part of a request body that did not fit the worker's socket at once,
//! written while the worker's answer is read.
//!
//! An app may answer before it has read its body (a 401 before an upload)
//! or while it reads it (a streamed echo). Were the edge to send the whole
//! body first and only then read, the worker would have to take in all of
//! it, up to `max_body`, to make room for its answer; written beside the
//! read, the worker takes the body only as fast as its app does.

use crate::edge::app::peer::Stream;
use crate::edge::app::request_body::RequestBody;
use bytes::{Buf, Bytes};
use nix::sys::socket::{send, MsgFlags};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct BodyRest {
    /// The worker's socket again, watched for room to write: its reading
    /// side stays with the connection (`unix_link`).
    socket: AsyncFd<OwnedFd>,
    body: RequestBody,
    /// Bytes of the body the worker has been sent.
    written: u64,
    /// The next bytes to write (all of a body in memory, a piece of a
    /// spooled one), from `written` on.
    next: Bytes,
}

impl BodyRest {
    /// The rest of `body` after its first `written` bytes, to go on `link`.
    pub fn new(link: &Stream, body: RequestBody, written: u64) -> io::Result<BodyRest> {
        // SAFETY: the AsyncFd owns the duplicate, which stays open and the
        // same until the AsyncFd drops it.
        let socket = unsafe { AsyncFd::register_with_interest(link.dup()?, Interest::WRITABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(BodyRest {
            socket,
            body,
            written,
            next: Bytes::new(),
        })
    }

    /// Writes the rest. Cancel-safe: what was written is remembered, so a
    /// `select!` may drop this and call it again later.
    pub async fn finish(&mut self) -> io::Result<()> {
        loop {
            if self.next.is_empty() {
                if self.written >= self.body.len() {
                    return Ok(());
                }
                self.next = self.body.bytes_after(self.written).await?;
            }
            let mut ready = self.socket.writable().await?;
            let next = &self.next;
            // MSG_NOSIGNAL: a worker that died is an error here, not SIGPIPE.
            let sent = ready.try_io(|fd| {
                send(fd.get_ref().as_raw_fd(), next, MsgFlags::MSG_NOSIGNAL)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => {
                    self.next.advance(n);
                    self.written += n as u64;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

/// Writes as much of `body` as the socket takes now, without waiting:
/// nearly every body fits. None: all of it went; else what is left.
pub fn write_now(link: &Stream, body: &RequestBody) -> io::Result<Option<BodyRest>> {
    let RequestBody::Memory(bytes) = body else {
        // Spooled (over 1 MiB): more than a socket takes at once anyway.
        return BodyRest::new(link, body.clone(), 0).map(Some);
    };
    let mut written = 0;
    while written < bytes.len() {
        match link.try_write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return BodyRest::new(link, body.clone(), written as u64).map(Some);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Writes the rest, if any (for `select!`: pending forever when none).
pub async fn finish(rest: &mut Option<BodyRest>) -> io::Result<()> {
    match rest {
        Some(r) => r.finish().await,
        None => std::future::pending().await,
    }
}
