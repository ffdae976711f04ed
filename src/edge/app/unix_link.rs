//! The edge's end of a worker's Unix socket, watched for reads only.
//!
//! tokio registers every socket for both directions, and Linux tells an
//! epoll watching a Unix socket "writable again" each time the *peer*
//! reads (`unix_write_space`). So each request the worker read woke an
//! edge thread parked in `epoll_wait` for nothing. Requests and bodies
//! nearly always fit the socket's buffer, so a write is simply tried; only
//! one that would block watches writability, on a duplicate of the socket
//! registered for that alone and dropped once the write goes through.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::Path;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

type Socket = std::os::unix::net::UnixStream;

pub struct UnixLink {
    read: AsyncFd<Socket>,
    /// Only while a write waits for room.
    write: Option<AsyncFd<Socket>>,
    /// Its name for the worker's cancels (`wire::withdraw`): unique among
    /// every edge process (the pid is in it), told the worker once.
    id: u64,
    named: bool,
    /// Requests written on it so far.
    sent: u64,
}

/// Links this edge process has opened.
static OPENED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl UnixLink {
    pub async fn connect(path: &Path) -> io::Result<Self> {
        // tokio's connect waits out a full backlog; then the socket is
        // registered again, for reads only.
        let socket = tokio::net::UnixStream::connect(path).await?.into_std()?;
        let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(UnixLink {
            read: watch(socket, Interest::READABLE)?,
            write: None,
            id: (u64::from(std::process::id()) << 32) | u64::from(n),
            named: false,
            sent: 0,
        })
    }

    /// Drops a readiness kept from reading the last answer, so that a wait
    /// for the next one is not over at once. Only before writing a
    /// request: nothing can have come for it yet.
    pub fn forget_readiness(&self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(Ok(mut ready)) = self.read.poll_read_ready(&mut cx) {
            ready.clear_ready();
        }
    }

    /// The line naming this link, the first time only.
    pub fn name_line(&mut self) -> Option<Vec<u8>> {
        (!std::mem::replace(&mut self.named, true))
            .then(|| crate::wire::withdraw::link_line(self.id))
    }

    /// Counts a request written; returns which it is (1 for the first).
    pub fn count_request(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits until a read would not block.
    pub async fn readable(&self) -> io::Result<()> {
        self.read.readable().await?.retain_ready();
        Ok(())
    }

    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.try_io(Interest::READABLE, |s| (&*s).read(buf))
    }

    /// Waits until a write would not block: rare, so a duplicate is
    /// watched for this alone, as `poll_write` does.
    pub async fn writable(&self) -> io::Result<()> {
        let dup = watch(self.socket().try_clone()?, Interest::WRITABLE)?;
        dup.writable().await?.retain_ready();
        Ok(())
    }

    /// Writes what the socket takes now, without waiting for room.
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        self.socket().write(data)
    }

    fn socket(&self) -> &Socket {
        self.read.get_ref()
    }
}

impl std::os::fd::AsFd for UnixLink {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket().as_fd()
    }
}

fn watch(socket: Socket, interest: Interest) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: the AsyncFd owns the socket, whose fd stays open and the
    // same until the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(|e| e.into_parts().1)
}

impl AsyncRead for UnixLink {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|s| s.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    // A short read emptied the socket: the next read would
                    // only say so with an EAGAIN (tokio's sockets do this too).
                    if n > 0 && n < unfilled.len() {
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for UnixLink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let waiting = match &mut this.write {
            Some(waiting) => waiting,
            None => match this.read.get_ref().write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dup = this.read.get_ref().try_clone()?;
                    this.write.insert(watch(dup, Interest::WRITABLE)?)
                }
                done => return Poll::Ready(done),
            },
        };
        loop {
            let mut guard = ready!(waiting.poll_write_ready(cx))?;
            match guard.try_io(|s| s.get_ref().write(data)) {
                Ok(done) => {
                    this.write = None;
                    return Poll::Ready(done);
                }
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket().shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A write larger than the socket's buffer waits for the peer to read
    /// (the writability watch), and every byte arrives, both ways.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_blocks_waits_for_room_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let body: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let want = Sha256::digest(&body);
        let echo = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Slow at first, so the edge's side fills up.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let mut got = vec![0u8; 4 * 1024 * 1024];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
        });
        let mut link = UnixLink::connect(&path).await.unwrap();
        link.write_all(&body).await.unwrap();
        let mut back = vec![0u8; body.len()];
        link.read_exact(&mut back).await.unwrap();
        assert_eq!(Sha256::digest(&back), want);
        assert!(
            link.write.is_none(),
            "the writability watch outlived its write"
        );
        echo.await.unwrap();
    }
}
