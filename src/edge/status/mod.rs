//! What a running site is doing, for people: `corral status` (text or
//! JSON, over the control socket), `GET /status.json` and the HTML page on
//! the metrics listener, and `corral dump` (`dump.rs`). Everything is read
//! when asked, from the pool (workers and what each runs), the metrics
//! (requests served, RSS) and the master's word; nothing is kept per
//! request for it beyond the pool's record of running requests.

pub mod certificates;
pub mod dump;
pub mod socket;

use crate::edge::app::pool::{Pool, Report, WorkerReport};
use crate::edge::metrics::Metrics;
use crate::edge::state::EdgeState;
use serde::Serialize;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

/// Where the facts come from; one per edge.
pub struct Inspector {
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub state: Arc<EdgeState>,
    pub queue_size: usize,
    pub started: Instant,
    /// What each `[[tls.cert]]` file holds.
    pub certificates: Vec<crate::config::tls::CertFacts>,
    pub acme: Option<Arc<crate::edge::acme::served::Served>>,
}

#[derive(Serialize)]
pub struct SiteStatus {
    pub corral: &'static str,
    pub edge_pid: u32,
    pub uptime_seconds: f64,
    /// Health answers 503: a stop is coming or this edge is draining.
    pub draining: bool,
    pub workers_wanted: u64,
    pub booting: u64,
    pub queue: Queue,
    pub workers: Vec<WorkerStatus>,
    pub certificates: Vec<certificates::CertificateStatus>,
}

#[derive(Serialize)]
pub struct Queue {
    pub depth: usize,
    pub size: usize,
}

#[derive(Serialize)]
pub struct WorkerStatus {
    pub id: u64,
    pub pid: i32,
    pub state: &'static str,
    pub interface: &'static str,
    pub capacity: usize,
    pub age_seconds: f64,
    pub requests: u64,
    pub rss_bytes: Option<u64>,
    pub last_restart: Option<String>,
    pub running: Vec<RunningStatus>,
}

#[derive(Serialize)]
pub struct RunningStatus {
    pub request: String,
    pub request_id: String,
    pub seconds: f64,
}

impl Inspector {
    pub fn status(&self) -> SiteStatus {
        let Report { queued, workers } = self.pool.report();
        let (workers_wanted, draining) = self.state.health_facts();
        SiteStatus {
            corral: env!("CARGO_PKG_VERSION"),
            edge_pid: std::process::id(),
            uptime_seconds: secs(self.started.elapsed()),
            draining,
            workers_wanted,
            booting: self.metrics.booting(),
            queue: Queue {
                depth: queued,
                size: self.queue_size,
            },
            workers: workers.iter().map(|w| self.worker(w)).collect(),
            certificates: certificates::list(&self.certificates, self.acme.as_deref()),
        }
    }

    fn worker(&self, w: &WorkerReport) -> WorkerStatus {
        let (requests, rss_bytes) = self.metrics.worker_numbers(w.id);
        WorkerStatus {
            id: w.id,
            pid: w.facts.pid,
            state: w.state.as_str(),
            interface: w.facts.interface.as_str(),
            capacity: w.facts.capacity,
            age_seconds: secs(w.facts.up_at.elapsed()),
            requests,
            rss_bytes,
            last_restart: w.facts.replaced.clone(),
            running: w
                .running
                .iter()
                .map(|(job, took)| RunningStatus {
                    request: job.request.to_string(),
                    request_id: job.id.to_string(),
                    seconds: secs(*took),
                })
                .collect(),
        }
    }
}

fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// `corral status` on a terminal.
pub fn text(s: &SiteStatus) -> String {
    let mut out = String::new();
    let serving = s.workers.iter().filter(|w| w.state != "draining").count();
    let _ = writeln!(
        out,
        "corral {} — edge pid {}, up {}{}",
        s.corral,
        s.edge_pid,
        human_secs(s.uptime_seconds),
        if s.draining { ", DRAINING" } else { "" }
    );
    let _ = writeln!(
        out,
        "workers: {serving} serving of {} wanted, {} booting; queue {}/{}",
        s.workers_wanted, s.booting, s.queue.depth, s.queue.size
    );
    let _ = writeln!(
        out,
        "\n{:>4} {:>8}  {:<8} {:<9} {:>9} {:>9} {:>8}  {:<13} running",
        "id", "pid", "state", "interface", "requests", "rss", "age", "replaced"
    );
    for w in &s.workers {
        let rss = w
            .rss_bytes
            .map_or("-".to_string(), |b| format!("{:.1}M", b as f64 / 1048576.0));
        let running = match w.running.as_slice() {
            [] => "-".to_string(),
            [one, rest @ ..] => {
                let more = if rest.is_empty() {
                    String::new()
                } else {
                    format!(" (+{} more)", rest.len())
                };
                format!(
                    "{} ({}) {}{more}",
                    one.request,
                    one.request_id,
                    human_secs(one.seconds)
                )
            }
        };
        let _ = writeln!(
            out,
            "{:>4} {:>8}  {:<8} {:<9} {:>9} {:>9} {:>8}  {:<13} {running}",
            w.id,
            w.pid,
            w.state,
            w.interface,
            w.requests,
            rss,
            human_secs(w.age_seconds),
            w.last_restart.as_deref().unwrap_or("-"),
        );
    }
    certificates::text(&mut out, &s.certificates);
    out
}

fn human_secs(s: f64) -> String {
    match s {
        s if s < 60.0 => format!("{s:.1}s"),
        s if s < 3600.0 => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        s => format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
    }
}
