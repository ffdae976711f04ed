//! The master: a single-threaded supervisor in the style of gunicorn's
//! arbiter. It forks the edge and the workers, and then loops:
//!
//! ```text
//! wait for an event (signal, child status line, 200 ms tick)
//! handle signals        -> change the desired state (stop, scale, reload)
//! handle status lines   -> ready / boot failure / recycle / timeout
//! reap dead children    -> explain the death, schedule a respawn
//! converge              -> start what is missing, drain what is extra
//! ```
//!
//! Reloads, recycling, scaling and crashes are all changes to the desired
//! state that `converge` then works towards, never special code paths. It
//! never starts a thread or a tokio runtime, so fork is always safe, and it
//! runs Python only with `app.preload`.

mod control_socket;
mod death;
mod edges;
mod listeners;
mod pid_file;
pub mod privileges;
mod reload;
mod runtime_dir;
mod signals;
mod sizing;
mod spawn;
mod systemd;
pub(crate) mod telemetry;
mod upgrade;
mod workers;

use crate::config::units::WorkerCount;
use crate::config::Site;
use crate::ipc::{self, Control, Status};
use anyhow::{bail, Context};
use edges::EdgeProc;
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
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use workers::WorkerProc;

pub use control_socket::find as find_control_socket;
pub use pid_file::signal_running;
pub use reload::{outcome_path as reload_outcome_path, read_outcome as read_reload_outcome};
pub use upgrade::outcome_path as upgrade_outcome_path;

/// Boot failures in a row (no worker becoming ready in between) after which
/// the master gives up: the app is broken, respawning will not help.
const MAX_BOOT_FAILURES: u32 = 3;
/// A child that lived longer than this was healthy; its death resets backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Why corral kills a child that outlived its stop (told in its death's line).
const OVERDUE: &str = "it did not stop within graceful_timeout";

/// Between the stack-dump signal and SIGKILL for a timed-out worker.
const DUMP_GRACE: Duration = Duration::from_secs(1);

pub fn serve(site: Site) -> anyhow::Result<()> {
    // Before anything else: by the time of an upgrade the file at this
    // path is the new binary.
    let launch = upgrade::Launch::of_this_process();
    let handover = upgrade::Handover::from_env();
    // Bound before anything is forked (and before privileges are dropped in
    // the children), so a busy or privileged port is reported against its key.
    crate::proctitle::set(&format!("corral: master ({})", site.file.display()));
    raise_fd_limit();
    let listeners = Listeners::bind_all(&site)?;
    let _pid_file = match &site.pid_file {
        Some(p) => Some(pid_file::PidFile::write(
            p,
            handover.as_ref().map(|h| h.from),
        )?),
        None => None,
    };
    let mut arbiter = Arbiter::new(site, listeners)?;
    arbiter.launch = launch;
    arbiter.systemd.set_muted(handover.is_some());
    arbiter.handover = handover;
    arbiter.run()
}

/// `[tls.acme] state_dir`, made here (the master may be root; the edge
/// that orders may not be) and handed to the site's user. Only a folder
/// corral makes is handed over: an existing one is left as it is (a
/// mistyped path must not give /etc/ssl away). Its parents are made
/// 0755, so the site's user can reach it.
pub(super) fn prepare_acme_state(site: &Site) -> anyhow::Result<()> {
    let Some(acme) = site.tls.as_ref().and_then(|t| t.acme.as_ref()) else {
        return Ok(());
    };
    let dir = &acme.state_dir;
    if dir.is_dir() {
        return Ok(());
    }
    let problem = |what: String| site.problem_at("tls.acme.state_dir", what).to_string();
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| problem(format!("cannot create {}", parent.display())))?;
    }
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        // Another instance sharing it made it just now: theirs to hand over.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| problem(format!("cannot create {}", dir.display()))),
        Ok(()) => privileges::chown_to_user(site, dir),
    }
}

/// `corral check`: every listening address can be bound, or is held by
/// this site's own running master (named in its pid file).
/// `corral check`'s look at the listen addresses: warnings for ports in
/// use (none when the pid file names this site's running server).
pub fn check_listeners(site: &Site) -> anyhow::Result<Vec<String>> {
    let warnings = listeners::check_bindable(site)?;
    Ok(if site_is_running(site) {
        Vec::new()
    } else {
        warnings
    })
}

fn site_is_running(site: &Site) -> bool {
    site.pid_file
        .as_deref()
        .and_then(pid_file::running_pid)
        .is_some()
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
    control_socket: control_socket::ControlSocket,
    signals: Signals,
    status_rx: File,
    status_tx: OwnedFd,
    status_buf: String,
    /// Usually one; two while a reload hands over from the old edge.
    edges: Vec<EdgeProc>,
    /// Bumped by each reload: edges of older generations are drained.
    generation: u64,
    edge_failures: u32,
    edge_next_start: Instant,
    last_edge_error: Option<String>,
    workers: BTreeMap<Pid, WorkerProc>,
    /// How many workers we want; TTIN/TTOU and reloads move it.
    target_workers: usize,
    worker_failures: u32,
    worker_next_start: Instant,
    /// The last death counted as a crash loop: the worker's id and the
    /// count before it, taken back if the edge then reports that worker
    /// went away with a request in hand (`on_vanished`).
    last_crash_loop: Option<(u64, u32)>,
    boot_failures: u32,
    last_boot_error: Option<String>,
    /// Reasons for replacements not yet started, given to the next workers
    /// started (so `corral status` can say why each worker exists).
    owed: std::collections::VecDeque<telemetry::Restart>,
    next_id: u64,
    announced: bool,
    stopping: Option<(Stop, Instant)>,
    fatal: Option<String>,
    oom_kills: Option<u64>,
    /// The app imported in this process, with `app.preload`.
    preloaded: Option<crate::worker::Loaded>,
    /// A SIGHUP whose first new worker is still booting.
    pending_reload: Option<reload::PendingReload>,
    /// Reloads finished (done or failed), for `corral reload`.
    reloads: u64,
    /// SIGTERM with `[server] drain_delay`: health checks answer 503 and
    /// the stop itself begins at this instant.
    drain_until: Option<Instant>,
    systemd: systemd::Notifier,
    /// How this binary was started, for SIGUSR2's upgrade.
    launch: Option<upgrade::Launch>,
    /// A SIGUSR2 whose new master is not ready yet.
    upgrade: Option<upgrade::Pending>,
    /// This master replaces an older one: tell it when ready.
    handover: Option<upgrade::Handover>,
    /// `workers = "auto"`: what the container allows, and whether the
    /// count was settled from a ready worker's interface and memory yet.
    allowance: Option<sizing::Allowance>,
    auto_sized: bool,
    /// Requests waiting in the edge's queue, as it last said.
    queued: u64,
    /// What the edges' metrics were last told.
    told: telemetry::Told,
}

impl Arbiter {
    fn new(site: Site, listeners: Listeners) -> anyhow::Result<Self> {
        let runtime = RuntimeDir::create(&site.config.server.runtime_dir)?;
        privileges::chown_to_user(&site, runtime.path())?;
        prepare_acme_state(&site)?;
        let control_path = control_socket::path(site.control_socket.as_deref(), runtime.path());
        let control_socket = control_socket::ControlSocket::bind(control_path, &site)?;
        let signals = Signals::install().context("cannot set up signal handling")?;
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create status pipe")?;
        nix::fcntl::fcntl(&rx, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let preloaded = if site.config.app.preload {
            Some(
                crate::worker::preload(&site)
                    .map_err(|e| anyhow::anyhow!("worker failed to boot: {e}"))?,
            )
        } else {
            None
        };
        let now = Instant::now();
        let allowance = (site.workers() == WorkerCount::Auto).then(sizing::Allowance::read);
        Ok(Arbiter {
            target_workers: first_estimate(&site, allowance.as_ref()),
            site,
            listeners,
            runtime,
            control_socket,
            signals,
            status_rx: File::from(rx),
            status_tx: tx,
            status_buf: String::new(),
            edges: Vec::new(),
            generation: 0,
            edge_failures: 0,
            edge_next_start: now,
            last_edge_error: None,
            workers: BTreeMap::new(),
            worker_failures: 0,
            worker_next_start: now,
            last_crash_loop: None,
            boot_failures: 0,
            last_boot_error: None,
            owed: Default::default(),
            next_id: 1,
            announced: false,
            stopping: None,
            fatal: None,
            oom_kills: death::oom_kills(),
            preloaded,
            pending_reload: None,
            reloads: 0,
            drain_until: None,
            systemd: systemd::Notifier::from_env(),
            launch: None,
            upgrade: None,
            handover: None,
            allowance,
            auto_sized: false,
            queued: 0,
            told: Default::default(),
        })
    }

    fn run(&mut self) -> anyhow::Result<()> {
        info!(
            "corral {} starting (pid {}): {} workers for {}:{}, runtime dir {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
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
            self.enforce_kill_deadlines();
            self.enforce_canary_deadline();
            self.watch_upgrade();
            self.end_drain_delay();
            let status = self.status_line();
            self.systemd.tick(&status);
            match self.stopping {
                Some((how, deadline)) => {
                    if self.converge_stop(how, deadline) {
                        break;
                    }
                }
                None => {
                    self.converge_workers();
                    self.converge_edges();
                    self.report_workers();
                }
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
        let mut fds = vec![
            PollFd::new(self.signals.fd(), PollFlags::POLLIN),
            PollFd::new(self.status_rx.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(p) = &self.upgrade {
            fds.push(PollFd::new(p.ready.as_fd(), PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, PollTimeout::from(200u16));
    }

    // ---- signals -------------------------------------------------------

    fn handle_signal(&mut self, sig: Signal) {
        match sig {
            Signal::SIGCHLD => {} // reaped every turn anyway
            Signal::SIGTERM => self.sigterm(),
            Signal::SIGINT | Signal::SIGQUIT => self.begin_stop(Stop::Fast),
            Signal::SIGHUP => self.reload(),
            Signal::SIGTTIN => {
                self.target_workers += 1;
                info!(
                    "SIGTTIN: workers {} -> {}",
                    self.target_workers - 1,
                    self.target_workers
                );
                self.tell_health();
            }
            Signal::SIGTTOU => {
                if self.target_workers > 1 {
                    self.target_workers -= 1;
                    info!(
                        "SIGTTOU: workers {} -> {}",
                        self.target_workers + 1,
                        self.target_workers
                    );
                    self.tell_health();
                } else {
                    info!("SIGTTOU ignored: already down to one worker");
                }
            }
            Signal::SIGUSR2 => self.begin_upgrade(),
            Signal::SIGUSR1 => {
                info!("SIGUSR1: reopening log files");
                self.tell_edges(&Control::ReopenLogs);
            }
            other => info!("{other:?} ignored"),
        }
    }

    /// A graceful stop, after `[server] drain_delay` when there is one: the
    /// health path goes 503 at once so load balancers stop sending, while
    /// everything sent meanwhile is still served. A second SIGTERM during
    /// the delay stops at once.
    fn sigterm(&mut self) {
        let delay = self.site.config.server.drain_delay.0;
        if self.drain_until.is_some() || self.stopping.is_some() || delay.is_zero() {
            return self.begin_stop(Stop::Graceful);
        }
        info!("SIGTERM: health checks answer 503 for {delay:?} (drain_delay) while requests are still served; then stopping");
        self.drain_until = Some(Instant::now() + delay);
        self.abandon_reload();
        self.tell_health();
        self.systemd.stopping(&format!(
            "draining: health checks answer 503 for {delay:?} before the stop"
        ));
    }

    fn end_drain_delay(&mut self) {
        if self.stopping.is_none() && self.drain_until.is_some_and(|t| Instant::now() >= t) {
            self.begin_stop(Stop::Graceful);
        }
    }

    /// What the health path needs from the master, to every edge.
    fn tell_health(&mut self) {
        let msg = self.health();
        self.tell_edges(&msg);
    }

    fn health(&self) -> Control {
        Control::Health {
            target_workers: self.target_workers as u64,
            draining: self.drain_until.is_some() || self.stopping.is_some(),
        }
    }

    /// One line for systemd's STATUS (shown by `systemctl status`).
    fn status_line(&self) -> String {
        let ready = self
            .workers
            .values()
            .filter(|w| w.ready && !w.retiring)
            .count();
        if self.stopping.is_some() {
            let left = self.workers.len() + self.edges.len();
            return format!("stopping: {left} processes left");
        }
        if self.drain_until.is_some() {
            return format!(
                "draining before the stop: {ready} workers serving, health answers 503"
            );
        }
        if self.pending_reload.is_some() {
            return format!("reloading: {ready} workers serving while the new code boots");
        }
        format!(
            "serving: {ready} of {} workers ready, {} queued",
            self.target_workers, self.queued
        )
    }

    fn begin_stop(&mut self, how: Stop) {
        match self.stopping {
            // INT after TERM hurries the stop along.
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
        self.systemd
            .stopping("stopping: finishing in-flight requests");
        self.abandon_reload();
        if let Some(p) = self.upgrade.take() {
            // A stop while the new binary boots: it goes too.
            let _ = kill(p.pid, Signal::SIGTERM);
        }
        self.listeners.close_all();
        let sig = if how == Stop::Graceful {
            Signal::SIGTERM
        } else {
            Signal::SIGINT
        };
        for edge in &mut self.edges {
            edge.retiring = true;
            let _ = kill(edge.pid, sig);
        }
        if how == Stop::Fast {
            for pid in self.workers.keys() {
                let _ = kill(*pid, Signal::SIGQUIT);
            }
        }
    }

    /// Graceful: the edge drains first (its in-flight requests need the
    /// workers), then the workers are told to stop. True when all are gone.
    fn converge_stop(&mut self, how: Stop, deadline: Instant) -> bool {
        let overdue = Instant::now() >= deadline;
        if overdue {
            for edge in &mut self.edges {
                warn!("edge {} did not stop in time, killing it", edge.pid);
                edge.killed_for = Some(OVERDUE);
                let _ = kill(edge.pid, Signal::SIGKILL);
            }
        }
        if self.edges.is_empty() || how == Stop::Fast {
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
                for (pid, w) in &mut self.workers {
                    warn!("worker {pid} did not stop in time, killing it");
                    w.killed_for = Some(OVERDUE.into());
                    let _ = kill(*pid, Signal::SIGKILL);
                }
            }
        }
        self.edges.is_empty() && self.workers.is_empty()
    }

    // ---- child status lines --------------------------------------------

    fn read_status(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.status_rx.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.status_buf
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        while let Some(nl) = self.status_buf.find('\n') {
            let line: String = self.status_buf.drain(..=nl).collect();
            match Status::decode(line.trim_end()) {
                Some(Status::Ready(pid, serves)) => self.on_ready(Pid::from_raw(pid), serves),
                Some(Status::Failed(pid, reason)) => {
                    let pid = Pid::from_raw(pid);
                    if self.edges.iter().any(|e| e.pid == pid) {
                        self.last_edge_error = Some(reason);
                    } else {
                        self.last_boot_error = Some(reason);
                    }
                }
                Some(Status::Retire(pid, reason)) => {
                    if let Some(w) = self.workers.get_mut(&Pid::from_raw(pid)) {
                        w.recycle.get_or_insert(reason);
                    }
                }
                Some(Status::Timeout(id, what)) => self.on_timeout(id, what),
                Some(Status::Suspect(id)) => self.on_suspect(id),
                Some(Status::Vanished(id)) => self.on_vanished(id),
                Some(Status::Queued(n)) => self.queued = n,
                None => warn!("unreadable status line from a child: {line:?}"),
            }
        }
    }

    fn on_ready(&mut self, pid: Pid, serves: Option<ipc::Serves>) {
        if self.is_canary(pid) {
            self.on_canary_ready(serves);
        } else if self.edges.iter().any(|e| e.pid == pid) {
            self.on_edge_ready(pid);
        } else if let Some(w) = self.workers.get_mut(&pid) {
            w.ready = true;
            w.ready_at = Some(Instant::now());
            w.serves = serves;
            self.boot_failures = 0;
            let msg = w.up();
            info!("worker {pid} ready (id {})", w.id);
            self.tell_edges(&msg);
            self.settle_auto_workers(pid, serves);
        }
        self.announce_if_ready();
    }

    fn announce_if_ready(&mut self) {
        if !self.announced
            && self.edges.iter().any(|e| e.ready && !e.retiring)
            && self.workers.values().filter(|w| w.ready).count() >= self.target_workers
        {
            self.announced = true;
            info!(
                "corral ready: listening on {} with {} workers",
                listeners::describe(&self.site),
                self.target_workers
            );
            match &mut self.handover {
                // Not systemd's main process yet: the old master hands over.
                Some(h) => {
                    h.ready();
                    self.systemd.set_muted(false);
                }
                None => {
                    let status = self.status_line();
                    self.systemd.ready(&status);
                }
            }
        }
    }

    /// Sends a control line to every edge (a draining one too: it still
    /// needs to hear about workers going down).
    fn tell_edges(&mut self, msg: &Control) {
        for edge in &mut self.edges {
            if let Err(e) = ipc::send_control(&mut edge.control, msg) {
                warn!("cannot tell edge {} {msg:?}: {e}", edge.pid);
            }
        }
    }

    // ---- deaths ----------------------------------------------------------

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid, death::Death::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, core)) => {
                    self.on_exit(pid, death::Death::Signaled(sig, core))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, death: death::Death) {
        let oom = if death.is_sigkill() {
            let now = death::oom_kills();
            let grew = matches!((self.oom_kills, now), (Some(a), Some(b)) if b > a);
            self.oom_kills = now;
            grew
        } else {
            false
        };
        if self.is_canary(pid) {
            self.on_canary_exit(death.describe(None, oom));
        } else if self.is_upgrade(pid) {
            self.upgrade_exited(death.describe_process(oom));
        } else if let Some(edge) = self.edges.iter().find(|e| e.pid == pid) {
            self.on_edge_exit(pid, death.describe(edge.killed_for, oom));
        } else {
            self.on_worker_exit(pid, death, oom);
        }
    }

    /// Something is broken beyond respawning: stop everything, exit 1.
    fn fail(&mut self, reason: String) {
        error!("{reason}");
        self.fatal = Some(reason);
        self.begin_stop(Stop::Fast);
    }
}

/// The workers to start with: the configured number, or for "auto" the
/// CPU half (the memory half needs a worker's size: `settle_auto_workers`).
fn first_estimate(site: &Site, allowance: Option<&sizing::Allowance>) -> usize {
    let (WorkerCount::Auto, Some(allowance)) = (site.workers(), allowance) else {
        return match site.workers() {
            WorkerCount::Fixed(n) => n,
            WorkerCount::Auto => 1,
        };
    };
    let interface = match site.config.app.interface {
        crate::config::schema::Interface::Wsgi => Some(ipc::Interface::Wsgi),
        crate::config::schema::Interface::Asgi => Some(ipc::Interface::Asgi),
        crate::config::schema::Interface::Auto => None,
    };
    let (n, why) = sizing::decide(allowance, interface, site.config.app.threads, None);
    info!("workers = \"auto\": {why}; starting {n}");
    n
}

impl Arbiter {
    /// `workers = "auto"`, once per generation: the first ready worker
    /// tells the interface and how much memory one worker takes.
    fn settle_auto_workers(&mut self, pid: Pid, serves: Option<ipc::Serves>) {
        let Some(allowance) = &self.allowance else {
            return;
        };
        if self.auto_sized {
            return;
        }
        self.auto_sized = true;
        let others: u64 = std::iter::once(std::process::id() as i32)
            .chain(self.edges.iter().map(|e| e.pid.as_raw()))
            .filter_map(sizing::rss_of)
            .sum();
        let rss = sizing::rss_of(pid.as_raw()).map(|w| (w, others));
        let interface = serves.map(|s| s.interface);
        let threads = self.site.config.app.threads;
        let (n, why) = sizing::decide(allowance, interface, threads, rss);
        info!("workers = \"auto\": {why}; running {n}");
        if n != self.target_workers {
            self.target_workers = n;
            self.tell_health();
        }
    }
}

/// Every client connection costs the edge a descriptor or two: take the
/// hard limit (as nginx's worker_rlimit_nofile would). The edge fits
/// `max_connections` to what it gives, and says so (`within_fd_limit`).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let d = Duration::from_millis(100) * 2u32.saturating_pow(failures.min(10) - 1);
    d.min(MAX_BACKOFF)
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
