//! Listens to the master on the control pipe and keeps the dispatch pool's
//! list of workers current. If the pipe closes the master is gone, and the
//! edge exits (PDEATHSIG would kill it too; this is the belt to those braces).

use crate::edge::app::pool::{Facts, Pool};
use crate::ipc::Control;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncBufReadExt;
use tracing::{debug, error};

/// When a worker the master says is `age_ms` old was started.
fn started_ago(age_ms: u64) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_sub(std::time::Duration::from_millis(age_ms))
        .unwrap_or(now)
}

pub struct ControlListener {
    pub pool: Arc<Pool>,
    pub state: Arc<crate::edge::state::EdgeState>,
    pub metrics: Arc<crate::edge::metrics::Metrics>,
    pub fd: Mutex<Option<RawFd>>,
    pub status_fd: RawFd,
    /// Reopened on the master's word (SIGUSR1, logrotate).
    pub log: crate::edge::access_log::Log,
}

#[async_trait]
impl BackgroundService for ControlListener {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(fd) = crate::edge::inherited::take_once(&self.fd) else {
            return;
        };
        // SAFETY: the fd is the control pipe's read end, inherited and owned
        // by this process alone.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(owned) {
            Ok(rx) => rx,
            Err(e) => {
                error!("cannot read the control pipe: {e}");
                std::process::exit(70);
            }
        };
        crate::ipc::send_status(
            self.status_fd,
            &crate::ipc::Status::Ready(std::process::id() as i32, None),
        );
        tokio::spawn(report_queue(self.pool.clone(), self.status_fd));
        let mut lines = tokio::io::BufReader::new(rx).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => match Control::decode(&line) {
                    Some(Control::Up {
                        id,
                        pid,
                        serves,
                        replaced,
                        age_ms,
                        code,
                        socket,
                    }) => {
                        debug!("worker {id} (pid {pid}) up at {socket} ({serves:?})");
                        let socket = std::path::PathBuf::from(socket);
                        let facts = Facts {
                            stacks: socket.with_extension("stacks"),
                            pid,
                            replaced,
                            interface: serves.interface,
                            capacity: serves.capacity,
                            up_at: started_ago(age_ms),
                            code,
                        };
                        self.pool.worker_up(id, socket.into(), facts);
                        self.metrics.worker_up(id);
                    }
                    Some(Control::Down { id }) => {
                        debug!("worker {id} down");
                        self.pool.worker_down(id);
                        self.metrics.forget(id);
                    }
                    Some(Control::Restart { reason, count }) => {
                        self.metrics.restarted(reason, count)
                    }
                    Some(Control::Workers { booting, draining }) => {
                        self.metrics.states(booting, draining)
                    }
                    Some(Control::Rss { id, bytes }) => self.metrics.rss(id, bytes),
                    Some(Control::ReopenLogs) => self.log.reopen(),
                    Some(Control::Health {
                        target_workers,
                        draining,
                    }) => self.state.set_health(target_workers, draining),
                    None => error!("unreadable control line {line:?}"),
                },
                Ok(None) | Err(_) => {
                    error!("the master is gone; edge exiting");
                    std::process::exit(1);
                }
            }
        }
    }
}

/// Tells the master how many requests wait for a worker, when that
/// changes (checked once a second: it is for a status line, not control).
async fn report_queue(pool: Arc<Pool>, status_fd: RawFd) {
    let mut told = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let queued = pool.census().queued as u64;
        if queued != told {
            told = queued;
            crate::ipc::send_status(status_fd, &crate::ipc::Status::Queued(told));
        }
    }
}
