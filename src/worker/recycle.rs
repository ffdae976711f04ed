//! When a worker should be replaced: after `max_requests` (+ jitter), above
//! `max_rss`, or older than `max_lifetime`. The worker only *asks* (a
//! `retire` line to the master); the master starts its replacement first and
//! drains this one once the new worker is ready, so capacity never dips.

use crate::config::Site;
use crate::ipc::{send_status, Status};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Recycle {
    max_requests: Option<u64>,
    max_rss: Option<u64>,
    max_lifetime: Option<Duration>,
    started: Instant,
    served: AtomicU64,
    asked: AtomicBool,
    status_fd: RawFd,
}

impl Recycle {
    pub fn new(site: &Site, status_fd: RawFd) -> Self {
        let app = &site.config.app;
        let max_requests = (app.max_requests > 0).then(|| {
            // Each worker draws its own jitter, so a pool started together
            // does not recycle together.
            app.max_requests + jitter(app.max_requests_jitter)
        });
        Recycle {
            max_requests,
            max_rss: (app.max_rss.0 > 0).then_some(app.max_rss.0),
            max_lifetime: Some(app.max_lifetime.0).filter(|d| !d.is_zero()),
            started: Instant::now(),
            served: AtomicU64::new(0),
            asked: AtomicBool::new(false),
            status_fd,
        }
    }

    /// Called after each request.
    pub fn after_request(&self) {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(max) = self.max_requests {
            if served >= max {
                return self.ask(format!("served {served} requests (max_requests {max})"));
            }
        }
        if let Some(max) = self.max_rss {
            if let Some(rss) = rss_bytes() {
                if rss > max {
                    return self.ask(format!(
                        "resident memory {} MiB is over max_rss {} MiB",
                        rss >> 20,
                        max >> 20
                    ));
                }
            }
        }
        self.tick();
    }

    /// Called after each request and when idle.
    pub fn tick(&self) {
        if let Some(max) = self.max_lifetime {
            if self.started.elapsed() >= max {
                self.ask(format!("older than max_lifetime {max:?}"));
            }
        }
    }

    fn ask(&self, reason: String) {
        if !self.asked.swap(true, Ordering::SeqCst) {
            tracing::info!(
                "worker {} asks to be recycled: {reason}",
                std::process::id()
            );
            send_status(
                self.status_fd,
                &Status::Retire(std::process::id() as i32, reason),
            );
        }
    }
}

fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    // Per-process randomness without a crate: pid and clock mixed (splitmix64).
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut z = t ^ (u64::from(std::process::id()) << 32);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % (max + 1)
}

/// Resident set size from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * page as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_bounded() {
        for _ in 0..100 {
            assert!(jitter(10) <= 10);
        }
        assert_eq!(jitter(0), 0);
        assert!(rss_bytes().unwrap() > 0);
    }
}
