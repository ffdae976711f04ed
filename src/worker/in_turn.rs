//! `threads = 1`: one thread serves every connection from the edge, in turn.
//!
//! ```text
//! epoll_wait on the listener and every edge connection (GIL released)
//!   └─ for each ready connection: read its request, run the app, answer
//! ```
//!
//! Why one thread and not a thread per connection: the edge hands a busy
//! worker its next request ahead of time, on another connection
//! (`edge/app/pool.rs`). A thread per connection would sleep on that
//! connection and be woken to run it, a context switch per request; here
//! the thread that finished the last request finds the next one waiting in
//! `epoll_wait` and goes on without sleeping. Under load the worker then
//! never sleeps at all. Requests still run one at a time, as with any
//! `threads = 1` worker; a request is read whole before the app starts.

use super::link::{Link, Next};
use super::recycle::Recycle;
use super::server::{App, Drain, Running};
use super::withdrawals::{self, Withdrawals};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use pyo3::prelude::*;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use tracing::error;

/// The listener's key in the epoll set; connections are keyed by their
/// slab index.
const LISTENER: u64 = u64::MAX;

struct Links {
    epoll: Epoll,
    open: slab::Slab<Link>,
    withdrawals: Arc<Withdrawals>,
}

/// Serves until stopped; returns the exit code.
pub fn serve(
    py: Python<'_>,
    app: &dyn App,
    listener: &UnixListener,
    socket: &Path,
    recycle: &Recycle,
) -> i32 {
    let withdrawals = match withdrawals::listen(socket) {
        Ok(w) => w,
        Err(e) => {
            error!("worker cannot listen for the edge's cancels: {e}");
            return 70;
        }
    };
    let links = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).and_then(|epoll| {
        epoll.add(listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        Ok(Links {
            epoll,
            open: slab::Slab::new(),
            withdrawals,
        })
    });
    let mut links = match links {
        Ok(l) => l,
        Err(e) => {
            error!("worker cannot watch its socket: {e}");
            return 70;
        }
    };
    let mut events = [EpollEvent::empty(); 64];
    let mut drain = Drain::default();
    loop {
        let ready = match py.detach(|| links.epoll.wait(&mut events, 100u16)) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                error!("worker cannot wait for requests: {e}");
                return 70;
            }
        };
        for event in &events[..ready] {
            match event.data() {
                LISTENER => {
                    // Served at once, in this turn: a connection waits in
                    // the backlog while a request runs, and what it
                    // carries was sent before what came since on the
                    // connections already watched (epoll reports those in
                    // the order they became ready, this one last).
                    for key in links.accept(listener) {
                        let hung_up = links.hung_up(key);
                        links.serve(py, app, recycle, key, hung_up);
                    }
                }
                key => {
                    let hung_up = event.events().contains(EpollFlags::EPOLLRDHUP);
                    links.serve(py, app, recycle, key as usize, hung_up)
                }
            }
        }
        recycle.tick();
        if drain.done() {
            return 0;
        }
    }
}

impl Links {
    /// Takes every waiting connection (until `WouldBlock`); returns their
    /// keys, oldest first.
    fn accept(&mut self, listener: &UnixListener) -> Vec<usize> {
        let mut taken = Vec::new();
        while let Ok((conn, _)) = listener.accept() {
            // Blocking: a response is written whole, the app waiting.
            let _ = conn.set_nonblocking(false);
            let link = match Link::new(conn, Some(self.withdrawals.clone())) {
                Ok(l) => l,
                Err(e) => {
                    error!("cannot use a connection from the edge: {e}");
                    continue;
                }
            };
            let entry = self.open.vacant_entry();
            let watch = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            let event = EpollEvent::new(watch, entry.key() as u64);
            match self.epoll.add(link.stream().as_ref(), event) {
                Ok(()) => {
                    taken.push(entry.key());
                    entry.insert(link);
                }
                Err(e) => error!("cannot watch a connection from the edge: {e}"),
            }
        }
        taken
    }

    /// Whether the edge has already closed a connection just taken (one
    /// `poll`, only for new connections; epoll says it for the others).
    fn hung_up(&self, key: usize) -> bool {
        use std::os::fd::AsRawFd;
        let Some(link) = self.open.get(key) else {
            return false;
        };
        // libc's poll: nix has no name for POLLRDHUP and drops unknown bits.
        let mut fd = libc::pollfd {
            fd: link.stream().as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout.
        let seen = unsafe { libc::poll(&mut fd, 1, 0) } > 0;
        seen && fd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
    }

    /// Serves what a ready connection holds. The edge sends a connection's
    /// next request only after this one's answer, so once the buffer is
    /// used up the thread goes back to `epoll_wait` without another read.
    fn serve(
        &mut self,
        py: Python<'_>,
        app: &dyn App,
        recycle: &Recycle,
        key: usize,
        hung_up: bool,
    ) {
        let Some(link) = self.open.get_mut(key) else {
            return;
        };
        loop {
            match py.detach(|| link.next(false, hung_up)) {
                Next::Run(req) => {
                    let running = Running::start();
                    let keep_alive = app.handle(py, req, link.stream().clone());
                    drop(running);
                    recycle.after_request();
                    if !keep_alive {
                        return self.close(key);
                    }
                    if !link.has_buffered() {
                        return;
                    }
                }
                Next::Idle => return,
                Next::Close => return self.close(key),
            }
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(link) = self.open.try_remove(key) {
            let _ = self.epoll.delete(link.stream().as_ref());
            link.close();
        }
    }
}
