//! Graceful stop of an edge (SIGTERM: shutdown, or a reload handing over
//! to a new edge), done the way nginx does it rather than pingora's way.
//!
//! pingora's graceful shutdown drops every connection whose request has not
//! arrived yet, including ones accepted a moment before, and then sleeps a
//! fixed grace period. During a reload that fails fresh connections. So the
//! edge first stops accepting on its own (its accept loops end; the master
//! keeps the listening sockets open for the new edge), keeps serving what it has, tells keep-alive
//! clients to reconnect (`Connection: close`), and only hands over to
//! pingora's shutdown once nothing has been in flight for a moment.

use crate::edge::proxy::IN_FLIGHT;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Set once the edge is draining: responses then close their connection.
pub static DRAINING: AtomicBool = AtomicBool::new(false);

/// How long nothing must be in flight before the edge lets go: covers a
/// request whose connection was accepted just before accepting stopped.
const QUIET: Duration = Duration::from_millis(1000);

pub async fn drain(limit: Duration) {
    DRAINING.store(true, Ordering::SeqCst);
    crate::edge::conn::accept::stop_accepting();
    info!("edge draining: no new connections, finishing in-flight requests");
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    while started.elapsed() < limit {
        if IN_FLIGHT.load(Ordering::SeqCst) == 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET {
                info!("edge drained");
                return;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    warn!("edge drain hit graceful_timeout ({limit:?}) with requests still in flight");
}
