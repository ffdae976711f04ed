//! Graceful stop of an edge (SIGTERM: shutdown, or a reload handing over
//! to a new edge), done the way nginx does it rather than pingora's way.
//!
//! pingora's graceful shutdown drops every connection whose request has not
//! arrived yet, including ones accepted a moment before, and then sleeps a
//! fixed grace period. During a reload that fails fresh connections. So the
//! edge first stops accepting on its own (the shared listening sockets stay
//! open for the new edge), keeps serving what it has, tells keep-alive
//! clients to reconnect (`Connection: close`), and only hands over to
//! pingora's shutdown once nothing has been in flight for a moment.

use super::proxy::IN_FLIGHT;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Set once the edge is draining: responses then close their connection.
pub static DRAINING: AtomicBool = AtomicBool::new(false);

/// How long nothing must be in flight before the edge lets go: covers a
/// request whose connection was accepted just before accepting stopped.
const QUIET: Duration = Duration::from_millis(1000);

pub async fn drain(listeners: &[RawFd], limit: Duration) {
    DRAINING.store(true, Ordering::SeqCst);
    stop_accepting(listeners);
    info!("edge draining: no new connections, finishing in-flight requests");
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    while started.elapsed() < limit {
        if IN_FLIGHT.load(Ordering::SeqCst) == 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET {
                info!("edge drained");
                return;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    warn!("edge drain hit graceful_timeout ({limit:?}) with requests still in flight");
}

/// Makes this process stop accepting on the shared listening sockets
/// without closing them for everyone: every fd of ours that refers to one
/// (the inherited ones and pingora's copies) is pointed at a private,
/// never-connected socket instead, so pingora's accept loop just idles.
fn stop_accepting(listeners: &[RawFd]) {
    let inodes: Vec<(u64, u64)> = listeners
        .iter()
        .filter_map(|fd| {
            nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) }).ok()
        })
        .map(|st| (st.st_dev, st.st_ino))
        .collect();
    let Ok(dummy) = std::net::TcpListener::bind("127.0.0.1:0") else {
        warn!(
            "cannot create a placeholder socket; new connections may still arrive while draining"
        );
        return;
    };
    let _ = dummy.set_nonblocking(true);
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        let Ok(st) = nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
        else {
            continue;
        };
        if inodes.contains(&(st.st_dev, st.st_ino)) {
            // SAFETY: dup2 atomically replaces what fd refers to, in this
            // process only; the listening socket stays open in the master.
            unsafe { libc::dup2(dummy.as_raw_fd(), fd) };
        }
    }
}
