//! The master: a single-threaded supervisor in the style of gunicorn's
//! arbiter. It forks the edge and the workers, and then loops:
//!
//! ```text
//! wait for an event (signal, child status line, timer)
//! handle signals        -> change the desired state (stop, scale)
//! handle status lines   -> workers become ready / report boot errors
//! reap dead children    -> explain the death, schedule a respawn
//! converge              -> start what is missing, stop what is extra
//! ```
//!
//! It never starts a thread or a tokio runtime, so fork is always safe, and
//! it never runs Python.

mod listeners;
mod runtime_dir;
mod signals;
mod spawn;

use crate::config::Site;
use crate::ipc::{self, Control, Status};
use anyhow::{bail, Context};
use listeners::Listeners;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use runtime_dir::RuntimeDir;
use signals::Signals;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Boot failures in a row (no worker ever becoming ready in between) after
/// which the master gives up: the app is broken, respawning will not help.
const MAX_BOOT_FAILURES: u32 = 3;
/// A child that lived longer than this was healthy; its death resets backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub fn serve(site: Site) -> anyhow::Result<()> {
    // Bound before anything is forked, so a busy or privileged port is
    // reported against its config key.
    let listeners = Listeners::bind_all(&site)?;
    let mut arbiter = Arbiter::new(site, listeners)?;
    arbiter.run()
}

struct WorkerProc {
    id: u64,
    started: Instant,
    ready: bool,
    socket: PathBuf,
    /// Told to stop; its death is expected.
    retiring: bool,
}

struct EdgeProc {
    pid: Pid,
    started: Instant,
    control: File,
    ready: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    Graceful,
    Fast,
}

struct Arbiter {
    site: Site,
    listeners: Listeners,
    runtime: RuntimeDir,
    signals: Signals,
    status_rx: File,
    status_tx: OwnedFd,
    status_buf: String,
    edge: Option<EdgeProc>,
    edge_failures: u32,
    edge_next_start: Instant,
    last_edge_error: Option<String>,
    workers: BTreeMap<Pid, WorkerProc>,
    /// How many workers we want; TTIN/TTOU move it.
    target_workers: usize,
    worker_failures: u32,
    worker_next_start: Instant,
    boot_failures: u32,
    last_boot_error: Option<String>,
    next_id: u64,
    announced: bool,
    stopping: Option<(Stop, Instant)>,
    fatal: Option<String>,
}

impl Arbiter {
    fn new(site: Site, listeners: Listeners) -> anyhow::Result<Self> {
        let runtime = RuntimeDir::create(&site.config.server.runtime_dir)?;
        let signals = Signals::install().context("cannot set up signal handling")?;
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create status pipe")?;
        nix::fcntl::fcntl(&rx, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let now = Instant::now();
        Ok(Arbiter {
            target_workers: site.workers(),
            site,
            listeners,
            runtime,
            signals,
            status_rx: File::from(rx),
            status_tx: tx,
            status_buf: String::new(),
            edge: None,
            edge_failures: 0,
            edge_next_start: now,
            last_edge_error: None,
            workers: BTreeMap::new(),
            worker_failures: 0,
            worker_next_start: now,
            boot_failures: 0,
            last_boot_error: None,
            next_id: 1,
            announced: false,
            stopping: None,
            fatal: None,
        })
    }

    fn run(&mut self) -> anyhow::Result<()> {
        info!(
            "corral {} starting: {} workers for {}:{}, runtime dir {}",
            env!("CARGO_PKG_VERSION"),
            self.target_workers,
            self.site.app.module,
            self.site.app.callable,
            self.runtime.path().display()
        );
        loop {
            self.wait_for_event();
            for sig in self.signals.drain() {
                self.handle_signal(sig);
            }
            self.read_status();
            self.reap();
            match self.stopping {
                Some((how, deadline)) => {
                    if self.converge_stop(how, deadline) {
                        break;
                    }
                }
                None => self.converge(),
            }
        }
        match self.fatal.take() {
            Some(reason) => bail!("{reason}"),
            None => {
                info!("all processes stopped, bye");
                Ok(())
            }
        }
    }

    fn wait_for_event(&mut self) {
        let mut fds = [
            PollFd::new(self.signals.fd(), PollFlags::POLLIN),
            PollFd::new(self.status_rx.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, PollTimeout::from(200u16));
    }

    // ---- signals -------------------------------------------------------

    fn handle_signal(&mut self, sig: Signal) {
        match sig {
            Signal::SIGCHLD => {} // reaped every turn anyway
            Signal::SIGTERM => self.begin_stop(Stop::Graceful),
            Signal::SIGINT | Signal::SIGQUIT => self.begin_stop(Stop::Fast),
            Signal::SIGTTIN => {
                self.target_workers += 1;
                info!(
                    "SIGTTIN: workers {} -> {}",
                    self.target_workers - 1,
                    self.target_workers
                );
            }
            Signal::SIGTTOU => {
                if self.target_workers > 1 {
                    self.target_workers -= 1;
                    info!(
                        "SIGTTOU: workers {} -> {}",
                        self.target_workers + 1,
                        self.target_workers
                    );
                }
            }
            other => info!("{other:?} ignored: not supported yet"),
        }
    }

    fn begin_stop(&mut self, how: Stop) {
        match self.stopping {
            // A second TERM, or INT after TERM, hurries the stop along.
            Some((Stop::Graceful, _)) if how == Stop::Fast => {}
            Some(_) => return,
            None => {}
        }
        let deadline = match how {
            Stop::Graceful => {
                info!(
                    "graceful stop: finishing in-flight requests (up to {:?})",
                    self.site.graceful_timeout()
                );
                Instant::now() + self.site.graceful_timeout() + Duration::from_secs(1)
            }
            Stop::Fast => {
                info!("fast stop");
                Instant::now() + Duration::from_secs(2)
            }
        };
        self.stopping = Some((how, deadline));
        if let Some(edge) = &self.edge {
            let sig = if how == Stop::Graceful {
                Signal::SIGTERM
            } else {
                Signal::SIGINT
            };
            let _ = kill(edge.pid, sig);
        }
        if how == Stop::Fast {
            for pid in self.workers.keys() {
                let _ = kill(*pid, Signal::SIGQUIT);
            }
        }
    }

    /// Graceful: the edge drains first (it finishes in-flight requests, which
    /// need the workers), then the workers are told to stop. Returns true
    /// when every child is gone.
    fn converge_stop(&mut self, how: Stop, deadline: Instant) -> bool {
        let overdue = Instant::now() >= deadline;
        if overdue {
            if let Some(edge) = &self.edge {
                warn!("edge {} did not stop in time, killing it", edge.pid);
                let _ = kill(edge.pid, Signal::SIGKILL);
            }
        }
        if self.edge.is_none() || how == Stop::Fast {
            let retire: Vec<Pid> = self
                .workers
                .iter()
                .filter(|(_, w)| !w.retiring)
                .map(|(p, _)| *p)
                .collect();
            for pid in retire {
                self.retire_worker(pid);
            }
            if overdue {
                for pid in self.workers.keys() {
                    warn!("worker {pid} did not stop in time, killing it");
                    let _ = kill(*pid, Signal::SIGKILL);
                }
            }
        }
        self.edge.is_none() && self.workers.is_empty()
    }

    fn retire_worker(&mut self, pid: Pid) {
        if let Some(w) = self.workers.get_mut(&pid) {
            w.retiring = true;
            let id = w.id;
            let _ = kill(pid, Signal::SIGTERM);
            self.tell_edge(&Control::Down { id });
        }
    }

    // ---- child status lines --------------------------------------------

    fn read_status(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.status_rx.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self
                    .status_buf
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => break, // EAGAIN: drained
            }
        }
        while let Some(nl) = self.status_buf.find('\n') {
            let line: String = self.status_buf.drain(..=nl).collect();
            match Status::decode(line.trim_end()) {
                Some(Status::Ready(pid)) => self.on_ready(Pid::from_raw(pid)),
                Some(Status::Failed(pid, reason)) => {
                    let pid = Pid::from_raw(pid);
                    if self.edge.as_ref().is_some_and(|e| e.pid == pid) {
                        self.last_edge_error = Some(reason);
                    } else {
                        self.last_boot_error = Some(reason);
                    }
                }
                None => warn!("unreadable status line from a child: {line:?}"),
            }
        }
    }

    fn on_ready(&mut self, pid: Pid) {
        if let Some(edge) = self.edge.as_mut().filter(|e| e.pid == pid) {
            edge.ready = true;
        } else if let Some(w) = self.workers.get_mut(&pid) {
            w.ready = true;
            self.boot_failures = 0;
            let msg = Control::Up {
                id: w.id,
                socket: w.socket.display().to_string(),
            };
            info!("worker {pid} ready (id {})", w.id);
            self.tell_edge(&msg);
        }
        if !self.announced
            && self.edge.as_ref().is_some_and(|e| e.ready)
            && self.workers.values().filter(|w| w.ready).count() >= self.target_workers
        {
            self.announced = true;
            let urls: Vec<String> = self
                .site
                .listen
                .iter()
                .map(|a| format!("http://{a}"))
                .collect();
            info!(
                "corral ready: listening on {} with {} workers",
                urls.join(", "),
                self.target_workers
            );
        }
    }

    fn tell_edge(&mut self, msg: &Control) {
        if let Some(edge) = self.edge.as_mut() {
            if let Err(e) = ipc::send_control(&mut edge.control, msg) {
                warn!("cannot tell the edge {msg:?}: {e}");
            }
        }
    }

    // ---- deaths ----------------------------------------------------------

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid, describe_exit(code)),
                Ok(WaitStatus::Signaled(pid, sig, core)) => {
                    self.on_exit(pid, describe_signal(sig, core))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, how: String) {
        if self.edge.as_ref().is_some_and(|e| e.pid == pid) {
            let Some(edge) = self.edge.take() else { return };
            if self.stopping.is_some() {
                info!("edge {pid} stopped ({how})");
                return;
            }
            error!("edge {pid} died: {how}");
            if edge.started.elapsed() < HEALTHY_AFTER {
                self.edge_failures += 1;
            } else {
                self.edge_failures = 0;
            }
            if self.edge_failures >= MAX_BOOT_FAILURES {
                let reason = self.last_edge_error.clone().unwrap_or(how);
                self.fail(format!("edge failed to start: {reason}"));
                return;
            }
            self.edge_next_start = Instant::now() + backoff(self.edge_failures);
            return;
        }
        let Some(w) = self.workers.remove(&pid) else {
            return; // a probe or an already-forgotten child
        };
        let _ = std::fs::remove_file(&w.socket);
        self.tell_edge(&Control::Down { id: w.id });
        if w.retiring || self.stopping.is_some() {
            info!("worker {pid} stopped ({how})");
            return;
        }
        if !w.ready {
            self.boot_failures += 1;
            error!("worker {pid} failed to boot: {how}");
            if self.boot_failures >= MAX_BOOT_FAILURES {
                let reason = self.last_boot_error.clone().unwrap_or(how);
                self.fail(format!("worker failed to boot: {reason}"));
                return;
            }
        } else {
            error!("worker {pid} died: {how}; starting a replacement");
        }
        if w.started.elapsed() < HEALTHY_AFTER {
            self.worker_failures += 1;
        } else {
            self.worker_failures = 0;
        }
        self.worker_next_start = Instant::now() + backoff(self.worker_failures);
    }

    /// Something is broken beyond respawning: stop everything, exit 1.
    fn fail(&mut self, reason: String) {
        error!("{reason}");
        self.fatal = Some(reason);
        self.begin_stop(Stop::Fast);
    }

    // ---- converging to the desired state ----------------------------------

    fn converge(&mut self) {
        let now = Instant::now();
        let live: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring)
            .map(|(p, _)| *p)
            .collect();
        if live.len() < self.target_workers && now >= self.worker_next_start {
            for _ in live.len()..self.target_workers {
                if let Err(e) = self.spawn_worker() {
                    error!("cannot start a worker: {e:#}");
                    self.worker_next_start = now + backoff(1);
                    break;
                }
            }
        } else if live.len() > self.target_workers {
            // Retire the newest first: the oldest have warm caches.
            for pid in live.iter().rev().take(live.len() - self.target_workers) {
                info!("retiring worker {pid}");
                self.retire_worker(*pid);
            }
        }
        if self.edge.is_none() && now >= self.edge_next_start {
            if let Err(e) = self.spawn_edge() {
                error!("cannot start the edge: {e:#}");
                self.edge_next_start = now + backoff(1);
            }
        }
    }

    fn spawn_worker(&mut self) -> anyhow::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let socket = self.runtime.worker_socket(id);
        let status_fd = self.status_tx.as_raw_fd();
        let site = &self.site;
        let sock = socket.clone();
        let pid = spawn::fork_child(&[status_fd], || {
            crate::worker::run(site, id, &sock, status_fd)
        })
        .context("fork failed")?;
        self.workers.insert(
            pid,
            WorkerProc {
                id,
                started: Instant::now(),
                ready: false,
                socket,
                retiring: false,
            },
        );
        Ok(())
    }

    fn spawn_edge(&mut self) -> anyhow::Result<()> {
        let (ctl_rx, ctl_tx) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create control pipe")?;
        nix::fcntl::fcntl(&ctl_tx, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let status_fd = self.status_tx.as_raw_fd();
        let ctl_fd = ctl_rx.as_raw_fd();
        let site = &self.site;
        let listen_fds = self.listeners.fds();
        let mut keep = vec![status_fd, ctl_fd];
        keep.extend(listen_fds.iter().map(|(_, fd)| *fd));
        let handoff = self.runtime.path().join("edge-listeners.sock");
        let pid = spawn::fork_child(&keep, || {
            crate::edge::run(
                site,
                crate::edge::Inherited {
                    control_fd: ctl_fd,
                    status_fd,
                    listen_fds,
                    handoff,
                },
            )
        })
        .context("fork failed")?;
        drop(ctl_rx);
        self.edge = Some(EdgeProc {
            pid,
            started: Instant::now(),
            control: File::from(ctl_tx),
            ready: false,
        });
        // A new edge knows nothing: tell it about every ready worker.
        let ups: Vec<Control> = self
            .workers
            .values()
            .filter(|w| w.ready && !w.retiring)
            .map(|w| Control::Up {
                id: w.id,
                socket: w.socket.display().to_string(),
            })
            .collect();
        for msg in ups {
            self.tell_edge(&msg);
        }
        Ok(())
    }
}

fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let d = Duration::from_millis(100) * 2u32.saturating_pow(failures.min(10) - 1);
    d.min(MAX_BACKOFF)
}

fn describe_exit(code: i32) -> String {
    match code {
        0 => "exited normally".into(),
        3 => "exit code 3 (app failed to load)".into(),
        70 => "exit code 70 (internal error, see the log above)".into(),
        c => format!("exit code {c}"),
    }
}

fn describe_signal(sig: Signal, core: bool) -> String {
    let what = match sig {
        Signal::SIGKILL => {
            "killed by SIGKILL (by an operator, or the kernel's OOM killer: check `dmesg`)"
        }
        Signal::SIGSEGV => "crashed with SIGSEGV (a C extension bug?)",
        Signal::SIGABRT => "aborted (SIGABRT)",
        Signal::SIGTERM => "stopped by SIGTERM",
        _ => "killed by a signal",
    };
    format!(
        "{what} [{sig:?}{}]",
        if core { ", core dumped" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
