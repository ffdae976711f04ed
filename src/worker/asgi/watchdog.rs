//! Detects an event loop that stopped turning: a sync call (time.sleep, a
//! blocking driver) inside async code blocks every request on the worker,
//! not one. The loop beats every tick; a thread watches the beat and,
//! after `app.timeout` without one, reports the worker as timed out — the
//! master then dumps its Python stacks (showing the call that blocks) and
//! replaces it, as it does for a WSGI request over the timeout.

use crate::ipc::{send_status, Status};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Heartbeat {
    since: Instant,
    /// Milliseconds after `since` of the last beat; 0 before serving starts.
    last: AtomicU64,
}

impl Heartbeat {
    pub fn new() -> Arc<Self> {
        Arc::new(Heartbeat {
            since: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    pub fn beat(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.last.store(ms.max(1), Ordering::Relaxed);
    }

    /// How long since the last beat (None before the first).
    fn silent_for(&self) -> Option<Duration> {
        let last = self.last.load(Ordering::Relaxed);
        (last > 0).then(|| {
            let now = self.since.elapsed().as_millis() as u64;
            Duration::from_millis(now.saturating_sub(last))
        })
    }
}

/// Starts the watching thread (when there is a timeout to enforce).
pub fn watch(beat: Arc<Heartbeat>, timeout: Option<Duration>, id: u64, status_fd: RawFd) {
    let Some(timeout) = timeout else { return };
    let every = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(silent) = beat.silent_for() else {
                continue;
            };
            if silent >= timeout {
                let what = format!(
                    "its event loop (blocked for {:.1}s by a call that does not await)",
                    silent.as_secs_f64()
                );
                send_status(status_fd, &Status::Timeout(id, what));
                return;
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the event loop watchdog: {e}");
    }
}
