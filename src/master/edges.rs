//! The edge process(es) as the master sees them. Normally one; during a
//! reload a new-generation edge starts beside the old one (both accept on
//! the same inherited listening sockets) and the old one drains once the new
//! one is ready, so no connection is refused.

use super::{backoff, spawn, Arbiter, HEALTHY_AFTER, MAX_BOOT_FAILURES};
use crate::ipc::{self, Control};
use anyhow::Context;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Instant;
use tracing::{error, info, warn};

pub struct EdgeProc {
    pub pid: Pid,
    pub started: Instant,
    pub control: File,
    pub ready: bool,
    pub generation: u64,
    /// Told to drain (SIGTERM); its exit is expected.
    pub retiring: bool,
    /// Why corral killed it, if it did.
    pub killed_for: Option<&'static str>,
}

impl Arbiter {
    pub(super) fn converge_edges(&mut self) {
        let current = self
            .edges
            .iter()
            .any(|e| e.generation == self.generation && !e.retiring);
        if !current && Instant::now() >= self.edge_next_start {
            if let Err(e) = self.spawn_edge() {
                error!("cannot start the edge: {e:#}");
                self.edge_next_start = Instant::now() + backoff(1);
            }
        }
    }

    pub(super) fn on_edge_ready(&mut self, pid: Pid) {
        let generation = self.generation;
        let mut retire = Vec::new();
        for e in &mut self.edges {
            if e.pid == pid {
                e.ready = true;
                self.edge_failures = 0;
            }
        }
        if self
            .edges
            .iter()
            .any(|e| e.pid == pid && e.generation == generation)
        {
            for e in &mut self.edges {
                if e.generation < generation && !e.retiring {
                    e.retiring = true;
                    retire.push(e.pid);
                }
            }
        }
        for old in retire {
            info!("edge {pid} ready; draining the previous edge {old}");
            let _ = kill(old, Signal::SIGTERM);
        }
        self.tell_health();
    }

    pub(super) fn on_edge_exit(&mut self, pid: Pid, how: String) {
        let Some(pos) = self.edges.iter().position(|e| e.pid == pid) else {
            return;
        };
        let edge = self.edges.remove(pos);
        if edge.retiring || self.stopping.is_some() {
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
    }

    fn spawn_edge(&mut self) -> anyhow::Result<()> {
        let (ctl_rx, ctl_tx) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create control pipe")?;
        nix::fcntl::fcntl(&ctl_tx, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let status_fd = self.status_tx.as_raw_fd();
        let ctl_fd = ctl_rx.as_raw_fd();
        let site = &self.site;
        let listen_fds = self.listeners.fds();
        let operator_fd = self.control_socket.fd();
        let mut keep = vec![status_fd, ctl_fd, operator_fd];
        keep.extend(listen_fds.iter().map(|(_, fd)| *fd));
        let pid = spawn::fork_child(&keep, self.preloaded.is_some(), || {
            crate::proctitle::set("corral: edge");
            let inherited = crate::edge::Inherited {
                control_fd: ctl_fd,
                status_fd,
                listen_fds,
                operator_fd,
            };
            crate::edge::run(site, inherited)
        })
        .context("fork failed")?;
        drop(ctl_rx);
        self.edges.push(EdgeProc {
            pid,
            started: Instant::now(),
            control: File::from(ctl_tx),
            ready: false,
            generation: self.generation,
            retiring: false,
            killed_for: None,
        });
        // A new edge knows nothing yet: tell it about every serving worker,
        // and what its health path and `corral status` report.
        let mut ups: Vec<Control> = self
            .workers
            .values()
            .filter(|w| w.ready && !w.retiring)
            .map(|w| w.up())
            .collect();
        ups.push(self.health());
        ups.extend(self.restart_totals());
        if let Some(edge) = self.edges.last_mut() {
            for msg in ups {
                if let Err(e) = ipc::send_control(&mut edge.control, &msg) {
                    warn!("cannot tell the new edge about a worker: {e}");
                }
            }
        }
        Ok(())
    }
}
