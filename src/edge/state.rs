//! What the parts of one edge process share, made once in `edge::run` and
//! passed down as an `Arc<EdgeState>`: no process-wide statics, so every
//! reader of a fact can be found from where it is handed in. Each field
//! says who writes it.
//!
//! Graceful stop (SIGTERM: shutdown, or a reload handing over to a new
//! edge) is done the way nginx does it rather than pingora's way. pingora's
//! graceful shutdown drops every connection whose request has not arrived
//! yet, including ones accepted a moment before, and then sleeps a fixed
//! grace period. During a reload that fails fresh connections. So the edge
//! first stops accepting on its own (its accept loops end; the master keeps
//! the listening sockets open for the new edge), keeps serving what it has,
//! tells keep-alive clients to reconnect (`Connection: close`), and only
//! hands over to pingora's shutdown once nothing has been in flight for a
//! moment.

use crate::edge::access_log;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// Edge-wide TLS facts, from the config.
#[derive(Default)]
pub struct TlsFacts {
    pub hsts: String,
    pub redirect_http: bool,
    /// Port of the first TLS listener, for redirects.
    pub https_port: Option<u16>,
}

pub struct EdgeState {
    /// Set by `drain`; read by `reply::header`: responses then close their
    /// connection.
    draining: AtomicBool,
    /// Requests being handled: counted up by `enter`, down when its
    /// `InFlight` drops (with the request's context); `drain` waits for 0.
    in_flight: AtomicUsize,
    /// Flipped once by `drain`; every accept loop (`conn::accept`) watches it.
    stop: watch::Sender<bool>,
    /// Flipped once by `drain` a second before its limit; every WebSocket
    /// tunnel (`app::tunnel`) watches it and asks its worker to close (1001).
    end_tunnels: watch::Sender<bool>,
    /// Flipped once when `drain` runs out of time with responses still
    /// going: each relay (`app::relay`) then cuts its client off, so an
    /// h2 stream is reset rather than left to end with the connection,
    /// which some clients take for a complete body.
    drain_over: watch::Sender<bool>,
    /// This process's pid, asked once (`getpid` is a system call every
    /// time), and the sequence of request ids.
    pid: u32,
    requests: AtomicU64,
    /// `[tls]` facts; None without TLS.
    pub tls: Option<TlsFacts>,
    /// The access log's sending end.
    pub log: access_log::Log,
    /// Small static files kept in memory (`files` reads and fills it).
    pub files_cache: crate::edge::files::cache::Cache,
    /// From the master (`control`, `Control::Health`): the workers it
    /// wants, and whether the site is draining before a stop
    /// (`drain_delay`); the health path reads them.
    target_workers: AtomicU64,
    site_draining: AtomicBool,
    /// HTTP/1.1 WebSockets between their request and their connection's
    /// task (`app::handed_over`).
    pub handovers: crate::edge::app::handed_over::Handovers,
}

/// One request in flight, for as long as this lives.
pub struct InFlight(Arc<EdgeState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long nothing must be in flight before the edge lets go: covers a
/// request whose connection was accepted just before accepting stopped.
const QUIET: Duration = Duration::from_millis(1000);
/// The same once the WebSockets were told to end: accepting stopped long
/// before, and the last second of the drain is theirs (it would otherwise
/// run out waiting, and warn, on every stop with a socket open).
const QUIET_AFTER_TUNNELS: Duration = Duration::from_millis(100);
/// How long the responses cut at the end of a drain get to say so.
const CUTS_FLUSH: Duration = Duration::from_millis(200);

impl EdgeState {
    pub fn new(tls: Option<TlsFacts>, log: access_log::Log) -> Arc<Self> {
        Arc::new(EdgeState {
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            stop: watch::channel(false).0,
            end_tunnels: watch::channel(false).0,
            drain_over: watch::channel(false).0,
            pid: std::process::id(),
            requests: AtomicU64::new(0),
            tls,
            log,
            files_cache: Default::default(),
            target_workers: AtomicU64::new(0),
            site_draining: AtomicBool::new(false),
            handovers: Default::default(),
        })
    }

    pub fn set_health(&self, target_workers: u64, draining: bool) {
        self.target_workers.store(target_workers, Ordering::Relaxed);
        self.site_draining.store(draining, Ordering::Relaxed);
    }

    /// The workers the master wants, and whether the site is going away
    /// (draining before a stop, or this edge stopping).
    pub fn health_facts(&self) -> (u64, bool) {
        let going = self.site_draining.load(Ordering::Relaxed) || self.is_draining();
        (self.target_workers.load(Ordering::Relaxed), going)
    }

    /// A request begins: its in-flight token and its id (pid, sequence).
    pub fn enter(self: &Arc<Self>) -> (InFlight, u32, u64) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let seq = self.requests.fetch_add(1, Ordering::Relaxed);
        (InFlight(self.clone()), self.pid, seq)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// For accept loops: changes to true when accepting must stop.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// For WebSocket tunnels: changes to true when they must end.
    pub fn tunnels_ending(&self) -> watch::Receiver<bool> {
        self.end_tunnels.subscribe()
    }

    /// Resolves when the drain ran out of time (`drain_over`).
    pub async fn drain_over(&self) {
        let mut over = self.drain_over.subscribe();
        let _ = over.wait_for(|v| *v).await;
    }

    pub async fn drain(&self, limit: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
        info!("edge draining: no new connections, finishing in-flight requests");
        let started = Instant::now();
        let end_tunnels_at = crate::wire::websockets_close_after(limit);
        let mut quiet_since: Option<Instant> = None;
        while started.elapsed() < limit {
            if started.elapsed() >= end_tunnels_at && !*self.end_tunnels.borrow() {
                self.end_tunnels.send_replace(true);
            }
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                let quiet = if *self.end_tunnels.borrow() {
                    QUIET_AFTER_TUNNELS
                } else {
                    QUIET
                };
                if since.elapsed() >= quiet {
                    info!("edge drained");
                    return;
                }
            } else {
                quiet_since = None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        warn!("edge drain hit graceful_timeout ({limit:?}) with requests still in flight; cutting them off");
        self.drain_over.send_replace(true);
        // Time for the cut responses' resets and closes to go out.
        tokio::time::sleep(CUTS_FLUSH).await;
    }
}
