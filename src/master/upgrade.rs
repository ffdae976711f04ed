//! Binary upgrade without dropping a connection (nginx's SIGUSR2, and
//! `corral upgrade`): the master starts the binary now found at its own
//! path with the same arguments, handing it the listening sockets (as
//! systemd's socket activation does, under corral's own variable names)
//! and a pipe on which the new master says "ready" once its edge listens
//! and its workers are ready. Only then does this master name the new one
//! systemd's main process (MAINPID=) and drain. A new binary that exits or
//! is not ready in time is stopped, and this master keeps serving.

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// How many listening sockets follow stdio (fds 3, 4, ...).
const LISTEN_FDS: &str = "CORRAL_UPGRADE_LISTEN_FDS";
/// The fd of the pipe the new master writes "ready" to.
const READY_FD: &str = "CORRAL_UPGRADE_READY_FD";
/// The pid of the master being replaced (its pid file may be taken over).
const FROM: &str = "CORRAL_UPGRADE_FROM";

/// The new master must be serving within this (app imports included).
pub const READY_LIMIT: Duration = Duration::from_secs(120);

/// How this process was started, kept from the start: by the time of an
/// upgrade the binary at that path is the new one.
pub struct Launch {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Launch {
    pub fn of_this_process() -> Option<Launch> {
        let exe = std::env::current_exe().ok()?;
        Some(Launch {
            exe,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// An upgrade under way, seen from the old master.
pub struct Pending {
    pub pid: Pid,
    pub ready: File,
    pub deadline: Instant,
}

/// Starts the new binary with `listeners` on fds 3.. and the ready pipe
/// after them.
pub fn start(launch: &Launch, listeners: &[RawFd]) -> anyhow::Result<Pending> {
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("cannot create the upgrade pipe")?;
    nix::fcntl::fcntl(
        &rx,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let mut handed: Vec<RawFd> = listeners.to_vec();
    handed.push(tx.as_raw_fd());
    let mut cmd = std::process::Command::new(&launch.exe);
    cmd.args(&launch.args)
        .stdin(std::process::Stdio::null())
        .env(LISTEN_FDS, listeners.len().to_string())
        .env(READY_FD, (3 + listeners.len()).to_string())
        .env(FROM, std::process::id().to_string());
    // SAFETY: `place_fds` only makes system calls on descriptors, in the
    // forked child of this single-threaded process.
    unsafe {
        cmd.pre_exec(move || {
            super::signals::reset_in_child();
            place_fds(&handed)
        })
    };
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", launch.exe.display()))?;
    drop(tx);
    Ok(Pending {
        pid: Pid::from_raw(child.id() as i32),
        ready: File::from(rx),
        deadline: Instant::now() + READY_LIMIT,
    })
}

/// In the child: `fds` become 3, 4, ... (inheritable); everything above
/// them closes at exec. Moved out of the way first, since a target number
/// may be one of the sources.
fn place_fds(fds: &[RawFd]) -> std::io::Result<()> {
    let first_free = 3 + fds.len() as RawFd;
    let mut high = Vec::with_capacity(fds.len());
    for &fd in fds {
        let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, first_free + 64) };
        if moved < 0 {
            return Err(std::io::Error::last_os_error());
        }
        high.push(moved);
    }
    for (i, &fd) in high.iter().enumerate() {
        if unsafe { libc::dup2(fd, 3 + i as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // The master's own descriptors (worker pipes, the originals above)
    // must not leak into the new master: a leaked listener would keep its
    // port open after the new master closed it.
    let flags = libc::CLOSE_RANGE_CLOEXEC as libc::c_int;
    let done = unsafe { libc::syscall(libc::SYS_close_range, first_free, u32::MAX, flags) };
    if done != 0 {
        for fd in first_free..4096 {
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// The new master's side: what the old one handed over, read once at start
/// (and removed from the environment, so workers do not see it).
pub struct Handover {
    pub from: i32,
    ready: Option<File>,
}

impl Handover {
    pub fn from_env() -> Option<Handover> {
        let from = std::env::var(FROM).ok()?.parse().ok()?;
        let fd: RawFd = std::env::var(READY_FD).ok()?.parse().ok()?;
        std::env::remove_var(FROM);
        std::env::remove_var(READY_FD);
        // SAFETY: the old master put the pipe at this fd for this process.
        let ready = unsafe { File::from(OwnedFd::from_raw_fd(fd)) };
        Some(Handover {
            from,
            ready: Some(ready),
        })
    }

    /// Tells the old master this one serves; it then drains.
    pub fn ready(&mut self) {
        if let Some(mut pipe) = self.ready.take() {
            let _ = pipe.write_all(format!("ready {}\n", std::process::id()).as_bytes());
        }
    }
}

/// The listening sockets an upgrading master handed this one (fds 3..).
pub fn inherited_listeners() -> Vec<OwnedFd> {
    let Some(n) = std::env::var(LISTEN_FDS)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return Vec::new();
    };
    std::env::remove_var(LISTEN_FDS);
    // SAFETY: the old master placed exactly `n` listeners at 3..3+n.
    (3..3 + n)
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// `<pid_file>.upgrade`: how the last upgrade ended, for `corral upgrade`.
pub fn outcome_path(pid_file: &Path) -> PathBuf {
    let mut name = pid_file.as_os_str().to_owned();
    name.push(".upgrade");
    PathBuf::from(name)
}

pub fn write_outcome(pid_file: Option<&Path>, outcome: &str) {
    if let Some(p) = pid_file {
        if let Err(e) = std::fs::write(outcome_path(p), format!("{outcome}\n")) {
            tracing::warn!("cannot write {}: {e}", outcome_path(p).display());
        }
    }
}

impl super::Arbiter {
    /// SIGUSR2: start the new binary beside this one.
    pub(super) fn begin_upgrade(&mut self) {
        if self.stopping.is_some() || self.drain_until.is_some() {
            return;
        }
        if let Some(p) = &self.upgrade {
            warn!(
                "SIGUSR2 ignored: the upgrade to pid {} is still starting",
                p.pid
            );
            return;
        }
        let Some(launch) = &self.launch else {
            return self.upgrade_failed("cannot tell which binary this process runs".into());
        };
        let fds: Vec<RawFd> = self.listeners.fds().into_iter().map(|(_, fd)| fd).collect();
        match start(launch, &fds) {
            Ok(p) => {
                info!(
                    "SIGUSR2: started {} (pid {}) with the listening sockets; this corral serves until it is ready",
                    launch.exe.display(),
                    p.pid
                );
                self.upgrade = Some(p);
            }
            Err(e) => self.upgrade_failed(format!("{e:#}")),
        }
    }

    /// Every turn: has the new master said "ready", gone away, or run out
    /// of time?
    pub(super) fn watch_upgrade(&mut self) {
        let Some(p) = &mut self.upgrade else {
            return;
        };
        // The pipe is non-blocking: what has come is in `said` either way
        // (WouldBlock while the new master holds it open). EOF without
        // "ready" means it exited, which `upgrade_exited` reports.
        let mut said = String::new();
        let _ = std::io::Read::read_to_string(&mut p.ready, &mut said);
        if said.starts_with("ready") {
            return self.upgrade_done();
        }
        if Instant::now() >= p.deadline {
            let pid = p.pid;
            let _ = kill(pid, Signal::SIGTERM);
            self.upgrade = None;
            self.upgrade_failed(format!(
                "the new corral (pid {pid}) was not ready after {READY_LIMIT:?}; stopped it"
            ));
        }
    }

    pub(super) fn is_upgrade(&self, pid: Pid) -> bool {
        self.upgrade.as_ref().is_some_and(|p| p.pid == pid)
    }

    /// The new master died before it was ready (its own log says why).
    pub(super) fn upgrade_exited(&mut self, how: String) {
        let pid = self.upgrade.take().map(|p| p.pid);
        if let Some(pid) = pid {
            self.upgrade_failed(format!("the new corral (pid {pid}) {how}"));
        }
    }

    fn upgrade_done(&mut self) {
        let Some(p) = self.upgrade.take() else {
            return;
        };
        let pid = p.pid.as_raw();
        info!("upgrade: the new corral (pid {pid}) serves; this one drains and exits");
        self.systemd.hand_over(pid as u32);
        write_outcome(self.site.pid_file.as_deref(), &format!("done {pid}"));
        // The new master already accepts on the same sockets: stop at once,
        // without drain_delay (the site stays healthy).
        self.begin_stop(super::Stop::Graceful);
    }

    fn upgrade_failed(&mut self, reason: String) {
        error!("upgrade failed: {reason}; this corral keeps serving");
        write_outcome(self.site.pid_file.as_deref(), &format!("failed {reason}"));
    }
}
