//! Running under systemd (`Type=notify` or `Type=notify-reload`): the
//! master tells the service manager when the site is ready, reloading or
//! stopping, keeps a one-line STATUS current, pings the watchdog, and takes
//! the listening sockets systemd passes (socket activation) instead of
//! binding its own. Outside systemd (no NOTIFY_SOCKET, no LISTEN_FDS) every
//! call here does nothing.

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrStorage};
use sd_notify::NotifyState;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub struct Notifier {
    /// Ping at half systemd's WatchdogSec, as sd_watchdog_enabled(3) advises.
    watchdog: Option<Duration>,
    last_ping: Instant,
    last_status: String,
}

impl Notifier {
    pub fn from_env() -> Self {
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        if let Some(every) = watchdog {
            info!("systemd watchdog on: pinging every {every:?}");
        }
        Notifier {
            watchdog,
            last_ping: Instant::now(),
            last_status: String::new(),
        }
    }

    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_string();
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload began; `ready` ends it, whichever way it went.
    pub fn reloading(&mut self) {
        let states = match NotifyState::monotonic_usec_now() {
            Ok(now) => vec![NotifyState::Reloading, now],
            Err(_) => vec![NotifyState::Reloading],
        };
        send(&states);
    }

    pub fn stopping(&mut self, status: &str) {
        self.last_status = status.to_string();
        send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Called every turn of the master's loop: STATUS when it changed, and
    /// the watchdog ping when due (the loop turning is what it vouches for).
    pub fn tick(&mut self, status: &str) {
        if status != self.last_status {
            self.last_status = status.to_string();
            send(&[NotifyState::Status(status)]);
        }
        if let Some(every) = self.watchdog {
            if self.last_ping.elapsed() >= every {
                self.last_ping = Instant::now();
                send(&[NotifyState::Watchdog]);
            }
        }
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
    }
}

/// The listening TCP sockets systemd passed (LISTEN_FDS for this pid), by
/// the address each is bound to. Anything else passed is closed with a
/// warning: corral only takes listening stream sockets.
pub fn inherited_listeners() -> Vec<(SocketAddr, OwnedFd)> {
    let fds = match sd_notify::listen_fds() {
        Ok(fds) => fds,
        Err(e) => {
            warn!("ignoring the sockets systemd passed: {e}");
            return Vec::new();
        }
    };
    fds.filter_map(|fd| {
        // SAFETY: LISTEN_FDS hands these descriptors to this process; each
        // is taken once, here.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        match listening_address(fd) {
            Some(addr) => Some((addr, owned)),
            None => {
                warn!("fd {fd} from systemd is not a listening TCP socket; closing it");
                None
            }
        }
    })
    .collect()
}

/// The address a listening TCP socket is bound to (made non-blocking, as
/// corral's own listeners are: systemd passes blocking ones by default).
fn listening_address(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: `fd` is open (owned by the caller) for this call's length.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if !getsockopt(&borrowed, sockopt::AcceptConn).ok()? {
        return None;
    }
    let addr: SockaddrStorage = getsockname(fd).ok()?;
    let addr = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
        (Some(v4), _) => SocketAddr::V4((*v4).into()),
        (None, Some(v6)) => SocketAddr::V6((*v6).into()),
        (None, None) => return None,
    };
    let flags = fcntl(borrowed, FcntlArg::F_GETFL).ok()?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(borrowed, FcntlArg::F_SETFL(flags)).ok()?;
    Some(addr)
}
