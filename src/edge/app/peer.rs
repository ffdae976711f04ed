//! Where a worker listens, and the stream to it. Workers listen on Unix
//! sockets in the master's private runtime folder; a TCP address is the
//! same HTTP/1.1 link over another transport. The rest of the request path
//! (pool, exchange, relay) names neither: it holds a `Peer` and reads and
//! writes a `Stream`.

use super::unix_link::UnixLink;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl From<PathBuf> for Peer {
    fn from(path: PathBuf) -> Self {
        Peer::Unix(path)
    }
}

impl Peer {
    pub async fn connect(&self) -> io::Result<Stream> {
        Ok(match self {
            Peer::Unix(path) => Stream::Unix(UnixLink::connect(path).await?),
            Peer::Tcp(addr) => {
                let s = TcpStream::connect(addr).await?;
                // Heads and small bodies go out as written.
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
        })
    }
}

/// A connection to a worker.
pub enum Stream {
    Unix(UnixLink),
    Tcp(TcpStream),
}

impl Stream {
    /// Waits until a read would not block (no buffer held meanwhile: an
    /// idle WebSocket tunnel costs no read buffer).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.readable().await,
            Stream::Tcp(s) => s.readable().await,
        }
    }

    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.try_read(buf),
            Stream::Tcp(s) => s.try_read(buf),
        }
    }

    /// The line naming a Unix link for the worker's cancels, once.
    pub fn name_line(&mut self) -> Option<Vec<u8>> {
        match self {
            Stream::Unix(s) => s.name_line(),
            Stream::Tcp(_) => None,
        }
    }

    /// Counts a request written; returns which it is (1 for the first;
    /// always 0 on TCP, which never takes requests ahead).
    pub fn count_request(&mut self) -> u64 {
        match self {
            Stream::Unix(s) => s.count_request(),
            Stream::Tcp(_) => 0,
        }
    }

    /// See `UnixLink::forget_readiness`.
    pub fn forget_readiness(&self) {
        if let Stream::Unix(s) = self {
            s.forget_readiness();
        }
    }

    /// Writes what the socket takes now, without waiting for room.
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.try_write(data),
            Stream::Tcp(s) => s.try_write(data),
        }
    }

    /// Waits until a write would not block.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.writable().await,
            Stream::Tcp(s) => s.writable().await,
        }
    }

    /// A second handle on the socket, for writing a request body while
    /// this one reads the answer (`body_rest`).
    pub fn dup(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        match self {
            Stream::Unix(s) => s.as_fd().try_clone_to_owned(),
            Stream::Tcp(s) => s.as_fd().try_clone_to_owned(),
        }
    }

    /// The Unix link's name (`wire::withdraw`).
    pub fn link_id(&self) -> Option<u64> {
        match self {
            Stream::Unix(s) => Some(s.id()),
            Stream::Tcp(_) => None,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both transports carry bytes both ways through the same `Stream`.
    #[tokio::test]
    async fn unix_and_tcp_peers_carry_bytes_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sock");
        let unix = tokio::net::UnixListener::bind(&path).unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = unix.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        tokio::spawn(async move {
            let (mut s, _) = tcp.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        for peer in [Peer::from(path.clone()), Peer::Tcp(addr)] {
            let mut s = peer.connect().await.unwrap();
            s.write_all(b"ping").await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"ping", "{peer:?}");
        }
        assert!(Peer::from(dir.path().join("none.sock"))
            .connect()
            .await
            .is_err());
    }
}
