//! Running under systemd (`Type=notify` or `Type=notify-reload`): the
//! master tells the service manager when the site is ready, reloading or
//! stopping, keeps a one-line STATUS current, pings the watchdog, and takes
//! the listening sockets systemd passes (socket activation) instead of
//! binding its own. Outside systemd (no NOTIFY_SOCKET, no LISTEN_FDS) every
//! call here does nothing.

use sd_notify::NotifyState;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub struct Notifier {
    /// Ping at half systemd's WatchdogSec, as sd_watchdog_enabled(3) advises.
    watchdog: Option<Duration>,
    last_ping: Instant,
    last_status: String,
    /// A master started by an upgrade is not systemd's main process until
    /// the old one hands over (MAINPID=); before that systemd would reject
    /// (and log) every message from it.
    muted: bool,
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
            muted: false,
        }
    }

    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_string();
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload began; `ready` ends it, whichever way it went.
    pub fn reloading(&mut self) {
        let states = match NotifyState::monotonic_usec_now() {
            Ok(now) => vec![NotifyState::Reloading, now],
            Err(_) => vec![NotifyState::Reloading],
        };
        self.send(&states);
    }

    /// A binary upgrade: the new master (`pid`) becomes the service's main
    /// process; this one drains.
    pub fn hand_over(&mut self, pid: u32) {
        let status = format!("upgraded: pid {pid} serves; this one drains");
        self.send(&[NotifyState::MainPid(pid), NotifyState::Status(&status)]);
        self.last_status = status;
        // No longer the main process: systemd would reject the rest.
        self.muted = true;
    }

    pub fn stopping(&mut self, status: &str) {
        self.last_status = status.to_string();
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Called every turn of the master's loop: STATUS when it changed, and
    /// the watchdog ping when due (the loop turning is what it vouches for).
    pub fn tick(&mut self, status: &str) {
        if status != self.last_status {
            self.last_status = status.to_string();
            self.send(&[NotifyState::Status(status)]);
        }
        if let Some(every) = self.watchdog {
            if self.last_ping.elapsed() >= every {
                self.last_ping = Instant::now();
                self.send(&[NotifyState::Watchdog]);
            }
        }
    }
}

impl Notifier {
    /// Like libsystemd's sd_notify, a blocking send: systemd always reads.
    fn send(&self, states: &[NotifyState]) {
        if self.muted {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
        }
    }
}

/// The listening sockets systemd passed (LISTEN_FDS for this pid).
pub fn inherited_listeners() -> Vec<OwnedFd> {
    match sd_notify::listen_fds() {
        // SAFETY: LISTEN_FDS hands these descriptors to this process; each
        // is taken once, here.
        Ok(fds) => fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect(),
        Err(e) => {
            warn!("ignoring the sockets systemd passed: {e}");
            Vec::new()
        }
    }
}
