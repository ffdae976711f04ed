//! Sockets the master passes the edge by fd number beside pingora's own
//! listeners (the control pipe, the control socket, the metrics listener),
//! and the accept loop the two listening ones share.

use crate::edge::state::EdgeState;
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;
use tracing::{error, warn};

/// The fd, the first time: a background service started again finds
/// nothing (the first start owns it).
pub fn take_once(fd: &Mutex<Option<RawFd>>) -> Option<RawFd> {
    fd.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// A listening socket tokio can accept on.
pub trait Listener: Sized {
    type Conn: Send + 'static;
    /// SAFETY (callers): `fd` is a listening socket of this kind that this
    /// process owns and nothing else will close.
    unsafe fn inherit(fd: RawFd) -> io::Result<Self>;
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    unsafe fn inherit(fd: RawFd) -> io::Result<Self> {
        // SAFETY: see the trait.
        let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std)
    }
    async fn accept_one(&self) -> io::Result<Self::Conn> {
        Ok(self.accept().await?.0)
    }
}

impl Listener for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;
    unsafe fn inherit(fd: RawFd) -> io::Result<Self> {
        // SAFETY: see the trait.
        let std = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        std.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(std)
    }
    async fn accept_one(&self) -> io::Result<Self::Conn> {
        Ok(self.accept().await?.0)
    }
}

/// Takes the inherited listening socket and hands each connection to
/// `serve` until the edge stops. A draining edge stops accepting: its
/// successor (after a reload both hold the socket) has the current view.
pub async fn accept_until_stopped<L: Listener>(
    fd: &Mutex<Option<RawFd>>,
    what: &str,
    state: &EdgeState,
    mut serve: impl FnMut(L::Conn),
) {
    let Some(fd) = take_once(fd) else {
        return;
    };
    // SAFETY: the master gave this process its own copy of the fd.
    let listener = match unsafe { L::inherit(fd) } {
        Ok(l) => l,
        Err(e) => return error!("cannot serve the {what}: {e}"),
    };
    let mut stopped = state.stopped();
    loop {
        let accepted = tokio::select! {
            a = listener.accept_one() => a,
            _ = stopped.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok(conn) => serve(conn),
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                warn!("{what}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
