//! `[metrics] listen`: the edge's counts in the Prometheus text format
//! (prometheus-client encodes them). What a request costs to count: a few
//! atomic adds and one label lookup, at its end (the access-log phase) and
//! when its worker is taken and released (`app::pool`). Gauges (queue
//! depth, idle and busy workers) are read from the pool at scrape time.

pub mod serve;

use crate::edge::app::pool::Census;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// What answered a request (the `kind` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Kind {
    /// The Python app (including the edge's 502/503/504 on its behalf).
    #[default]
    App,
    Static,
    Redirect,
    /// The edge's own refusals: malformed, too large, rate-limited.
    Refused,
    /// Health checks and `OPTIONS *`.
    Edge,
    WebSocket,
}

impl Kind {
    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Static => "static",
            Kind::Redirect => "redirect",
            Kind::Refused => "refused",
            Kind::Edge => "edge",
            Kind::WebSocket => "websocket",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    kind: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByKind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerState {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Proto {
    proto: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsVersion {
    version: String,
}

/// An open connection (or tunnel), counted until dropped.
pub struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerId {
    worker: String,
}

/// Seconds, from 1 ms to ~33 s in doublings.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

/// Status codes whose request counters are kept at hand.
const CODES: usize = 600;
const KINDS: usize = 6;
const _: () = assert!(Kind::WebSocket as usize + 1 == KINDS);

/// One kind's series, looked up in their families once and then kept:
/// `answered` runs for every request, and a family lookup is a lock and a
/// hash of the labels. Filled on first use, so a kind or code never seen
/// is not exported.
#[derive(Default)]
struct KindSeries {
    duration: std::sync::OnceLock<Histogram>,
    bytes: std::sync::OnceLock<Counter>,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Answered, Counter>,
    by_code: Box<[std::sync::OnceLock<Counter>]>,
    by_kind: [KindSeries; KINDS],
    duration: Family<ByKind, Histogram>,
    bytes: Family<ByKind, Counter>,
    queue_wait: Histogram,
    app_duration: Histogram,
    queue_depth: Gauge,
    workers: Family<WorkerState, Gauge>,
    restarts: Family<Reason, Counter>,
    worker_rss: Family<WorkerId, Gauge>,
    worker_requests: Family<WorkerId, Counter>,
    connections: Family<Proto, Gauge>,
    handshakes: Family<TlsVersion, Counter>,
    cache_hits: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("corral");
        let requests = Family::<Answered, Counter>::default();
        let duration =
            Family::<ByKind, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        let bytes = Family::<ByKind, Counter>::default();
        let queue_wait = Histogram::new(latency_buckets());
        let app_duration = Histogram::new(latency_buckets());
        let queue_depth = Gauge::default();
        let workers = Family::<WorkerState, Gauge>::default();
        let restarts = Family::<Reason, Counter>::default();
        let worker_rss = Family::<WorkerId, Gauge>::default();
        let worker_requests = Family::<WorkerId, Counter>::default();
        let connections = Family::<Proto, Gauge>::default();
        let handshakes = Family::<TlsVersion, Counter>::default();
        let cache_hits = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by what answered them and the status code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "From the request's first byte in to its last byte out",
            duration.clone(),
        );
        registry.register(
            "bytes_sent",
            "Response bytes sent to clients (bodies, after compression)",
            bytes.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "From a request complete at the edge to a worker taking it",
            queue_wait.clone(),
        );
        registry.register(
            "app_duration_seconds",
            "From a worker taking a request to its whole response being in",
            app_duration.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a worker",
            queue_depth.clone(),
        );
        registry.register(
            "workers",
            "Workers by state: booting, idle, busy, draining",
            workers.clone(),
        );
        registry.register(
            "worker_restarts",
            "Workers replaced, by reason",
            restarts.clone(),
        );
        registry.register(
            "worker_rss_bytes",
            "Resident memory of each serving worker (sampled every 5 s)",
            worker_rss.clone(),
        );
        registry.register(
            "worker_requests",
            "Requests each serving worker has taken",
            worker_requests.clone(),
        );
        registry.register(
            "connections",
            "Open client connections by HTTP version (http1, h2 by ALPN), \
             of them over TLS (tls), and open WebSocket tunnels (websocket)",
            connections.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed, by protocol version",
            handshakes.clone(),
        );
        registry.register(
            "static_cache_hits",
            "Static files served from the edge's memory cache",
            cache_hits.clone(),
        );
        // Every reason at 0 from the start: Prometheus' increase() cannot see
        // a series' first step, so a first restart would otherwise be lost.
        for reason in crate::master::telemetry::Restart::ALL {
            let reason = reason.as_str().to_string();
            let _ = restarts.get_or_create(&Reason { reason });
        }
        Metrics {
            registry,
            requests,
            by_code: (0..KINDS * CODES).map(|_| Default::default()).collect(),
            by_kind: Default::default(),
            duration,
            bytes,
            queue_wait,
            app_duration,
            queue_depth,
            workers,
            restarts,
            worker_rss,
            worker_requests,
            connections,
            handshakes,
            cache_hits,
        }
    }

    /// Counts a connection of this kind open until the result is dropped.
    pub fn open(&self, proto: &'static str) -> Open {
        let gauge = self.connections.get_or_create(&Proto { proto }).clone();
        gauge.inc();
        Open(gauge)
    }

    pub fn handshake(&self, version: &str) {
        let version = version.to_string();
        self.handshakes.get_or_create(&TlsVersion { version }).inc();
    }

    /// A request is over (the access-log phase).
    pub fn answered(&self, kind: Kind, code: u16, took: Duration, body_bytes: u64) {
        let name = kind.as_str();
        let answered = || {
            self.requests
                .get_or_create(&Answered { kind: name, code })
                .clone()
        };
        match self.by_code.get(kind.index() * CODES + code as usize) {
            Some(slot) if (code as usize) < CODES => slot.get_or_init(answered).inc(),
            _ => answered().inc(),
        };
        let series = &self.by_kind[kind.index()];
        let by_kind = ByKind { kind: name };
        series
            .duration
            .get_or_init(|| self.duration.get_or_create(&by_kind).clone())
            .observe(took.as_secs_f64());
        series
            .bytes
            .get_or_init(|| self.bytes.get_or_create(&by_kind).clone())
            .inc_by(body_bytes);
    }

    pub fn waited(&self, took: Duration) {
        self.queue_wait.observe(took.as_secs_f64());
    }

    /// A worker (`worker`: its id) is done with a request.
    pub fn worked(&self, took: Duration, worker: u64) {
        self.app_duration.observe(took.as_secs_f64());
        let worker = worker.to_string();
        self.worker_requests
            .get_or_create(&WorkerId { worker })
            .inc();
    }

    // What the master tells (`edge::control`).

    pub fn restarted(&self, reason: String, count: u64) {
        self.restarts
            .get_or_create(&Reason { reason })
            .inc_by(count);
    }

    pub fn states(&self, booting: u64, draining: u64) {
        for (state, n) in [("booting", booting), ("draining", draining)] {
            self.workers
                .get_or_create(&WorkerState { state })
                .set(n as i64);
        }
    }

    pub fn rss(&self, worker: u64, bytes: u64) {
        let worker = worker.to_string();
        self.worker_rss
            .get_or_create(&WorkerId { worker })
            .set(bytes as i64);
    }

    /// A worker is serving: its request count exists from 0, so a rate
    /// over it sees its first requests.
    pub fn worker_up(&self, id: u64) {
        let worker = id.to_string();
        let _ = self.worker_requests.get_or_create(&WorkerId { worker });
    }

    /// For `corral status`: requests worker `id` has taken, and its RSS
    /// when sampled yet.
    pub fn worker_numbers(&self, id: u64) -> (u64, Option<u64>) {
        let label = WorkerId {
            worker: id.to_string(),
        };
        let requests = self.worker_requests.get(&label).map_or(0, |c| c.get());
        let rss = self.worker_rss.get(&label).map(|g| g.get().max(0) as u64);
        (requests, rss)
    }

    /// Workers booting, as the master last said.
    pub fn booting(&self) -> u64 {
        let booting = WorkerState { state: "booting" };
        self.workers
            .get(&booting)
            .map_or(0, |g| g.get().max(0) as u64)
    }

    /// A worker is gone: its series go too (ids only grow, recycles would
    /// otherwise pile up series).
    pub fn forget(&self, worker: u64) {
        let id = WorkerId {
            worker: worker.to_string(),
        };
        self.worker_rss.remove(&id);
        self.worker_requests.remove(&id);
    }

    /// The text a scrape gets, with the gauges read now.
    pub fn render(&self, pool: Census, cache_hits: u64) -> String {
        self.queue_depth.set(pool.queued as i64);
        self.cache_hits
            .inc_by(cache_hits.saturating_sub(self.cache_hits.get()));
        for (state, n) in [("idle", pool.idle), ("busy", pool.busy)] {
            self.workers
                .get_or_create(&WorkerState { state })
                .set(n as i64);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}
