//! SIGHUP: a reload that can never take a running site down.
//!
//! The new config is read and checked, then one worker of the new code
//! boots beside the running ones (the canary). Only once it is ready does
//! the reload take effect: the new config becomes the site's, the canary
//! joins the pool, the old workers are replaced one by one and a new edge
//! takes over. If the config is refused or the canary fails to boot,
//! nothing changes: the old workers and the old config keep serving, the
//! error log says why, and the next SIGHUP tries again.
//!
//! The outcome is also written next to the pid file (`<pid_file>.reload`),
//! where `corral reload` waits for it.

use super::sizing;
use super::workers::WorkerProc;
use super::Arbiter;
use crate::config::units::WorkerCount;
use crate::config::Site;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// How long the canary may take to import the app and become ready.
const CANARY_LIMIT: Duration = Duration::from_secs(120);

/// A reload waiting for its canary.
pub struct PendingReload {
    site: Site,
    canary: Pid,
    worker: WorkerProc,
    deadline: Instant,
    /// Listening sockets the new config adds, bound at the SIGHUP.
    added: Vec<std::net::SocketAddr>,
}

/// What became of a reload, for the log and `corral reload`.
pub enum Outcome {
    Done(String),
    Failed(String),
}

impl Arbiter {
    /// SIGHUP: read the config again and boot a canary from it.
    pub(super) fn reload(&mut self) {
        if self.stopping.is_some() || self.drain_until.is_some() {
            return;
        }
        info!("SIGHUP: reloading {}", self.site.file.display());
        self.systemd.reloading();
        if let Some(old) = self.pending_reload.take() {
            warn!("a newer SIGHUP replaces the reload still booting its first worker");
            self.listeners.release(&old.added);
            let _ = kill(old.canary, Signal::SIGKILL);
        }
        let site = match crate::config::load(&self.site.file) {
            Ok(site) => site,
            Err(problems) => {
                for p in &problems.0 {
                    error!("reload refused, keeping the running config: {p}");
                }
                let text: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
                return self.reload_failed(format!("the config is refused: {}", text.join("; ")));
            }
        };
        if let Err(e) = super::prepare_acme_state(&site) {
            return self.reload_failed(format!("{e:#}"));
        }
        let added = match self.listeners.bind_new(&site) {
            Ok(added) => added,
            Err(e) => return self.reload_failed(format!("{e:#}")),
        };
        if self.preloaded.is_some() {
            warn!("app.preload is on: workers restart from the code imported at start; restart corral for new code");
        }
        match self.spawn_worker_for(&site, Some(super::telemetry::Restart::Reload)) {
            Ok((canary, mut worker)) => {
                info!("reload: worker {canary} boots the new code first");
                // The generation it runs begins when it is ready.
                worker.code = self.generation + 1;
                self.last_boot_error = None;
                self.pending_reload = Some(PendingReload {
                    site,
                    canary,
                    worker,
                    deadline: Instant::now() + CANARY_LIMIT,
                    added,
                });
            }
            Err(e) => {
                self.listeners.release(&added);
                self.reload_failed(format!("cannot start a worker: {e:#}"))
            }
        }
    }

    /// The canary is ready: the reload takes effect.
    pub(super) fn on_canary_ready(&mut self, serves: Option<crate::ipc::Serves>) {
        let Some(p) = self.pending_reload.take() else {
            return;
        };
        let mut worker = p.worker;
        worker.ready = true;
        worker.ready_at = Some(Instant::now());
        worker.serves = serves;
        let msg = worker.up();
        // "auto" is settled again from the canary (new code, new size).
        self.allowance = (p.site.workers() == WorkerCount::Auto).then(sizing::Allowance::read);
        self.auto_sized = false;
        self.target_workers = match p.site.workers() {
            WorkerCount::Fixed(n) => n,
            WorkerCount::Auto => self.target_workers,
        };
        self.listeners.keep_only(&p.site);
        info!("listening on {}", super::listeners::describe(&p.site));
        self.site = p.site;
        self.generation += 1;
        // The new code boots: a backoff left from replacements of broken
        // code on disk (up to a minute) must not hold back the old
        // generation's replacement, nor count against the new code.
        self.boot_failures = 0;
        self.worker_failures = 0;
        self.worker_next_start = Instant::now();
        for w in self.workers.values_mut().filter(|w| !w.retiring) {
            w.recycle.get_or_insert_with(|| "reload".to_string());
        }
        info!("worker {} ready (id {})", p.canary, worker.id);
        self.workers.insert(p.canary, worker);
        self.settle_auto_workers(p.canary, serves);
        self.tell_edges(&msg);
        self.tell_health();
        let done = format!(
            "reload done: worker {} runs the new code; replacing the others one by one",
            p.canary
        );
        info!("{done}");
        self.record_reload(Outcome::Done(done));
    }

    /// The canary died before it was ready (reaped), or took too long.
    pub(super) fn on_canary_exit(&mut self, how: String) {
        let Some(p) = self.pending_reload.take() else {
            return;
        };
        self.listeners.release(&p.added);
        let reason = self.last_boot_error.take().unwrap_or(how);
        self.reload_failed(format!("the new code does not boot: {reason}"));
    }

    pub(super) fn enforce_canary_deadline(&mut self) {
        if let Some(p) = &self.pending_reload {
            if Instant::now() >= p.deadline {
                let canary = p.canary;
                self.last_boot_error = Some(format!(
                    "worker {canary} was not ready after {CANARY_LIMIT:?}"
                ));
                let _ = kill(canary, Signal::SIGKILL);
            }
        }
    }

    pub(super) fn is_canary(&self, pid: Pid) -> bool {
        self.pending_reload
            .as_ref()
            .is_some_and(|p| p.canary == pid)
    }

    /// A stop while a canary boots: it goes too.
    pub(super) fn abandon_reload(&mut self) {
        if let Some(p) = self.pending_reload.take() {
            self.listeners.release(&p.added);
            let _ = kill(p.canary, Signal::SIGKILL);
            let _ = std::fs::remove_file(&p.worker.socket);
        }
    }

    fn reload_failed(&mut self, reason: String) {
        let serving = self.workers.values().filter(|w| !w.retiring).count();
        let msg = format!(
            "reload failed: {reason} (keeping {serving} workers of the previous generation)"
        );
        error!("{msg}");
        self.record_reload(Outcome::Failed(msg));
    }

    /// Either way the reload ended; systemd hears READY again.
    fn record_reload(&mut self, outcome: Outcome) {
        self.reloads += 1;
        let status = self.status_line();
        self.systemd.ready(&status);
        if let Some(pid_file) = &self.site.pid_file {
            write_outcome(&outcome_path(pid_file), self.reloads, &outcome);
        }
    }
}

/// `<pid_file>.reload`: the count of reloads so far and the last outcome.
pub fn outcome_path(pid_file: &Path) -> PathBuf {
    let mut name = pid_file.as_os_str().to_owned();
    name.push(".reload");
    PathBuf::from(name)
}

fn write_outcome(path: &Path, count: u64, outcome: &Outcome) {
    let line = match outcome {
        Outcome::Done(m) => format!("{count} ok {m}\n"),
        Outcome::Failed(m) => format!("{count} failed {}\n", m.replace('\n', " | ")),
    };
    let tmp = path.with_extension("reload.tmp");
    let written = std::fs::write(&tmp, line).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        warn!("cannot write {}: {e}", path.display());
    }
}

/// Reads `<pid_file>.reload`: (count, ok, message).
pub fn read_outcome(path: &Path) -> Option<(u64, bool, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.trim_end().splitn(3, ' ');
    let count = parts.next()?.parse().ok()?;
    let ok = parts.next()? == "ok";
    Some((count, ok, parts.next().unwrap_or("").to_string()))
}
