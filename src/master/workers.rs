//! The worker pool as the master sees it: which workers exist, which are
//! ready, which must be replaced, and converging that to `target_workers`.
//!
//! Replacement (recycling, reloads) always starts the new worker first and
//! drains the old one only once the new one is ready, one at a time, so the
//! pool's capacity never dips.

use super::death::Death;
use super::{backoff, spawn, Arbiter, DUMP_GRACE, HEALTHY_AFTER, MAX_BOOT_FAILURES};
use crate::config::Site;
use crate::ipc::{Control, Interface, Serves};
use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;
use tracing::{error, info};

/// A worker dying this soon after becoming ready counts as crash-looping.
const CRASH_LOOP_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

pub struct WorkerProc {
    pub id: u64,
    pub pid: Pid,
    /// Why the worker it took over from was replaced, if it took over.
    pub replaced: Option<super::telemetry::Restart>,
    pub started: Instant,
    pub ready: bool,
    pub ready_at: Option<Instant>,
    pub socket: PathBuf,
    /// Told to stop (SIGTERM sent, edge told "down"); its death is expected.
    pub retiring: bool,
    /// Should be replaced, for this reason; keeps serving until its
    /// replacement is ready.
    pub recycle: Option<String>,
    /// Why corral is killing it, and when SIGKILL follows.
    pub killed_for: Option<String>,
    pub kill_at: Option<Instant>,
    /// What it serves, from its `ready` line.
    pub serves: Option<Serves>,
    /// The edge reported it went away with a request in hand.
    pub vanished_serving: bool,
    /// The reload generation whose code it runs (`Control::Up`).
    pub code: u64,
}

impl WorkerProc {
    /// The line that tells an edge to route to this worker.
    pub fn up(&self) -> Control {
        Control::Up {
            id: self.id,
            pid: self.pid.as_raw(),
            replaced: self.replaced.map(|r| r.as_str().to_string()),
            age_ms: self.started.elapsed().as_millis() as u64,
            code: self.code,
            serves: self.serves.unwrap_or(Serves {
                interface: Interface::Wsgi,
                capacity: 1,
            }),
            socket: self.socket.display().to_string(),
        }
    }
}

impl Arbiter {
    pub(super) fn converge_workers(&mut self) {
        let now = Instant::now();
        let serving: Vec<(Pid, bool, bool, Instant)> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring)
            .map(|(p, w)| (*p, w.ready, w.recycle.is_some(), w.started))
            .collect();
        let fresh = serving.iter().filter(|w| !w.2).count();
        let fresh_ready = serving.iter().filter(|w| !w.2 && w.1).count();
        let booting = serving.iter().filter(|w| !w.2 && !w.1).count();
        let mut flagged: Vec<(Pid, Instant)> =
            serving.iter().filter(|w| w.2).map(|w| (w.0, w.3)).collect();
        flagged.sort_by_key(|w| w.1);

        // Start what is missing; while replacing, one new worker at a time.
        let mut wanted = self.target_workers.saturating_sub(fresh);
        if !flagged.is_empty() {
            wanted = wanted.min(1usize.saturating_sub(booting));
        }
        if wanted == 0 {
            // Nothing is being replaced: a reason left over is stale.
            self.owed.clear();
        }
        if wanted > 0 && now >= self.worker_next_start {
            if let Some(reason) = self.recycle_reason(flagged.first().map(|f| f.0)) {
                self.owed.push_front(reason);
            }
            for _ in 0..wanted {
                if let Err(e) = self.spawn_worker() {
                    error!("cannot start a worker: {e:#}");
                    self.worker_next_start = now + backoff(1);
                    break;
                }
            }
        }

        // Drain replaced workers once enough fresh ones are ready.
        let excess = (fresh_ready + flagged.len()).saturating_sub(self.target_workers);
        for (pid, _) in flagged.iter().take(excess) {
            let reason = self
                .workers
                .get(pid)
                .and_then(|w| w.recycle.clone())
                .unwrap_or_default();
            info!("recycling worker {pid} ({reason}): its replacement is ready");
            self.count_restart(super::telemetry::Restart::of_recycle(&reason));
            self.retire_worker(*pid);
        }

        // Scale down (TTOU, reload to fewer): retire the newest first.
        if flagged.is_empty() && fresh > self.target_workers {
            let mut extra: Vec<(Pid, Instant)> = serving
                .iter()
                .filter(|w| !w.2)
                .map(|w| (w.0, w.3))
                .collect();
            extra.sort_by_key(|w| std::cmp::Reverse(w.1));
            for (pid, _) in extra.into_iter().take(fresh - self.target_workers) {
                info!("retiring worker {pid}: {} wanted", self.target_workers);
                self.count_restart(super::telemetry::Restart::Scale);
                self.retire_worker(pid);
            }
        }
    }

    /// Why the oldest worker flagged for replacement is being replaced.
    fn recycle_reason(&self, flagged: Option<Pid>) -> Option<super::telemetry::Restart> {
        let reason = self.workers.get(&flagged?)?.recycle.as_deref()?;
        Some(super::telemetry::Restart::of_recycle(reason))
    }

    pub(super) fn spawn_worker(&mut self) -> anyhow::Result<()> {
        let site = self.site.clone();
        let replaced = self.owed.pop_front();
        let (pid, worker) = self.spawn_worker_for(&site, replaced)?;
        self.workers.insert(pid, worker);
        Ok(())
    }

    /// Forks a worker running `site`'s app (a reload's canary runs the new
    /// site before it is the master's).
    pub(super) fn spawn_worker_for(
        &mut self,
        site: &Site,
        replaced: Option<super::telemetry::Restart>,
    ) -> anyhow::Result<(Pid, WorkerProc)> {
        let id = self.next_id;
        self.next_id += 1;
        let socket = self.runtime.worker_socket(id);
        let status_fd = self.status_tx.as_raw_fd();
        let sock = socket.clone();
        let preloaded = self.preloaded.as_ref();
        let pid = spawn::fork_child(&[status_fd], preloaded.is_some(), || {
            if let Err(e) = super::privileges::drop_privileges(site) {
                error!("worker: {e:#}");
                return crate::worker::EXIT_BOOT_FAILED;
            }
            crate::proctitle::set(&format!(
                "corral: worker {id} [{}:{}]",
                site.app.module, site.app.callable
            ));
            let code = crate::worker::run(site, id, &sock, status_fd, preloaded);
            crate::worker::stderr_lines::finish();
            code
        })
        .context("fork failed")?;
        let worker = WorkerProc {
            id,
            pid,
            replaced,
            started: Instant::now(),
            ready: false,
            ready_at: None,
            socket,
            retiring: false,
            recycle: None,
            killed_for: None,
            kill_at: None,
            serves: None,
            vanished_serving: false,
            code: self.generation,
        };
        Ok((pid, worker))
    }

    /// Tells the edges to stop routing to a worker, then asks it to drain.
    pub(super) fn retire_worker(&mut self, pid: Pid) {
        if let Some(w) = self.workers.get_mut(&pid) {
            w.retiring = true;
            let id = w.id;
            self.tell_edges(&Control::Down { id });
            let _ = kill(pid, Signal::SIGTERM);
        }
    }

    /// The edge saw a request overrun `app.timeout` on worker `id`: dump its
    /// Python stacks (faulthandler on SIGUSR2), then kill it shortly after.
    pub(super) fn on_timeout(&mut self, id: u64, what: String) {
        let Some((pid, w)) = self.workers.iter_mut().find(|(_, w)| w.id == id) else {
            return;
        };
        if w.killed_for.is_some() {
            return;
        }
        error!(
            "worker {pid}: {what} ran past app.timeout ({:?}); dumping its Python stacks, then killing it",
            self.site.timeout().unwrap_or_default()
        );
        w.killed_for = Some(format!("request timeout: {what}"));
        // Its replacement starts now, before it is gone.
        self.owed.push_back(super::telemetry::Restart::Timeout);
        w.kill_at = Some(Instant::now() + DUMP_GRACE);
        w.retiring = true;
        let pid = *pid;
        let _ = kill(pid, Signal::SIGUSR2);
        self.tell_edges(&Control::Down { id });
    }

    /// The edge says worker `id` went away with a request in hand. A
    /// request that kills every worker it runs in (a query of death) would
    /// otherwise make each fresh worker, handed the next one at once, look
    /// crash-looping, and the respawn backoff (up to 30 s, as long as the
    /// queue's default wait) would leave the site without workers.
    pub(super) fn on_vanished(&mut self, id: u64) {
        match self.workers.values_mut().find(|w| w.id == id) {
            Some(w) => w.vanished_serving = true,
            None => self.forgive_crash_loop(id),
        }
        self.on_suspect(id);
    }

    /// Its death was already counted as a crash loop (the master saw it
    /// before the edge's word): count it as a death while serving instead.
    fn forgive_crash_loop(&mut self, id: u64) {
        if let Some((_, before)) = self.last_crash_loop.take_if(|(dead, _)| *dead == id) {
            self.worker_failures = before;
            self.worker_next_start = Instant::now() + backoff(before);
        }
    }

    /// An edge dropped worker `id` after a failed exchange. If the worker is
    /// in fact alive and serving (a death is reaped first), give it back.
    pub(super) fn on_suspect(&mut self, id: u64) {
        self.reap();
        let Some((pid, w)) = self.workers.iter().find(|(_, w)| w.id == id) else {
            return;
        };
        // A SIGKILLed worker is a zombie until reaped, and kill(pid, 0)
        // still succeeds on a zombie: look at its state instead.
        if w.ready && !w.retiring && super::pid_file::running(pid.as_raw()) {
            info!("worker {pid} (id {id}) is alive after a failed exchange; routing to it again");
            let msg = w.up();
            self.tell_edges(&msg);
        }
    }

    pub(super) fn enforce_kill_deadlines(&mut self) {
        let now = Instant::now();
        for (pid, w) in &mut self.workers {
            if w.kill_at.is_some_and(|t| now >= t) {
                w.kill_at = None;
                let _ = kill(*pid, Signal::SIGKILL);
            }
        }
    }

    /// Workers up and taking requests (not booting, not on their way out).
    fn serving_workers(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.ready && !w.retiring)
            .count()
    }

    pub(super) fn on_worker_exit(&mut self, pid: Pid, death: Death, oom: bool) {
        let Some(w) = self.workers.remove(&pid) else {
            return; // a probe or an already-forgotten child
        };
        let _ = std::fs::remove_file(&w.socket);
        let _ = std::fs::remove_file(w.socket.with_extension("stacks"));
        let _ = std::fs::remove_file(crate::wire::withdraw::control_path(&w.socket));
        self.tell_edges(&Control::Down { id: w.id });
        let how = death.describe_worker(w.ready, w.killed_for.as_deref(), oom);
        if self.stopping.is_some() {
            info!("worker {pid} stopped ({how})");
            return;
        }
        if w.killed_for.is_some() {
            error!("worker {pid} {how}; starting a replacement");
            self.count_restart(super::telemetry::Restart::Timeout);
            return;
        }
        if w.retiring {
            info!("worker {pid} stopped ({how})");
            return;
        }
        if !w.ready {
            self.boot_failures += 1;
            error!("worker {pid} failed to boot: {how}");
            if self.boot_failures >= MAX_BOOT_FAILURES {
                self.keeps_failing_to_boot(how);
                if self.fatal.is_some() {
                    return;
                }
            }
        } else {
            return self.died_while_up(pid, &w, &how, oom);
        }
        self.back_off_after(&w);
    }

    /// Workers keep failing to boot. At start that is the end (exit 1, so
    /// systemd or the deploy sees it). Once the site has served, code
    /// broken on disk (a deploy not yet reloaded, or one a reload refused)
    /// must not stop it, even when no worker is left (an OOM kill of
    /// them all): the edge stays up for static files, answers 503 for the
    /// app (health says so), and boots are retried with backoff.
    fn keeps_failing_to_boot(&mut self, how: String) {
        let serving = self.serving_workers();
        let reason = self.last_boot_error.clone().unwrap_or(how);
        let times = self.boot_failures;
        match (serving, self.announced) {
            (0, false) => self.fail(format!("worker failed to boot: {reason}")),
            (0, true) => error!(
                "no worker can boot ({times} tries): {reason}; the app answers 503 until one \
                 does (static files are still served); retrying (fix the code, then reload)"
            ),
            _ => error!(
                "replacement workers keep failing to boot ({times} times): {reason}; \
                 keeping the {serving} still serving and retrying (fix the code, then reload)"
            ),
        }
    }

    /// A worker that was up died (crashed, killed from outside, OOM).
    fn died_while_up(&mut self, pid: Pid, w: &WorkerProc, how: &str, oom: bool) {
        // The first steps (0.1, 0.2 s) are not worth a word: a death the
        // edge then reports as taken by a request is forgiven anyway.
        let wait = self.back_off_after(w);
        match wait < std::time::Duration::from_millis(500) {
            true => error!("worker {pid} died: {how}; starting a replacement"),
            false => error!(
                "worker {pid} died: {how}; starting a replacement in {:.1} s \
                 (workers keep dying right after they start: backing off)",
                wait.as_secs_f64()
            ),
        }
        let why = if oom {
            super::telemetry::Restart::Oom
        } else {
            super::telemetry::Restart::Crash
        };
        self.count_restart(why);
        self.owed.push_back(why);
    }

    /// Back off only for crash loops: deaths at boot or right after it. A
    /// worker that was up and serving is replaced at once (as gunicorn
    /// does), however often that happens; so is one that went away with a
    /// request in hand, however soon (the request may be what killed it).
    /// Returns the wait before the next start.
    fn back_off_after(&mut self, w: &WorkerProc) -> std::time::Duration {
        let quick = !w.ready || w.ready_at.is_some_and(|t| t.elapsed() < CRASH_LOOP_WINDOW);
        let crash_loop = quick && !w.vanished_serving && w.started.elapsed() < HEALTHY_AFTER;
        if crash_loop {
            self.last_crash_loop = Some((w.id, self.worker_failures));
            self.worker_failures += 1;
        } else {
            self.last_crash_loop = None;
            self.worker_failures = 0;
        }
        let wait = backoff(self.worker_failures);
        self.worker_next_start = Instant::now() + wait;
        wait
    }
}
