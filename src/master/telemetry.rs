//! What the master knows and the edge's metrics report (`Control` lines
//! on the edges' pipes): why workers were replaced, how many are booting
//! or draining, and each worker's resident memory. The edge owns the
//! metrics; the master only tells.

use super::Arbiter;
use crate::ipc::Control;
use std::time::{Duration, Instant};

/// How often each worker's RSS is read from /proc.
const RSS_EVERY: Duration = Duration::from_secs(5);

/// Why a worker was replaced (`corral_worker_restarts_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Timeout,
    MaxRequests,
    MaxRss,
    MaxLifetime,
    Crash,
    Oom,
    Reload,
    Scale,
}

impl Restart {
    pub const ALL: [Restart; 8] = [
        Restart::Timeout,
        Restart::MaxRequests,
        Restart::MaxRss,
        Restart::MaxLifetime,
        Restart::Crash,
        Restart::Oom,
        Restart::Reload,
        Restart::Scale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Timeout => "timeout",
            Restart::MaxRequests => "max_requests",
            Restart::MaxRss => "max_rss",
            Restart::MaxLifetime => "max_lifetime",
            Restart::Crash => "crash",
            Restart::Oom => "oom",
            Restart::Reload => "reload",
            Restart::Scale => "scale",
        }
    }

    /// A recycle's reason, as the worker (`worker/recycle.rs`) or a reload
    /// words it: each names the setting that caused it.
    pub fn of_recycle(reason: &str) -> Restart {
        if reason.contains("max_requests") {
            Restart::MaxRequests
        } else if reason.contains("max_rss") {
            Restart::MaxRss
        } else if reason.contains("max_lifetime") {
            Restart::MaxLifetime
        } else {
            Restart::Reload
        }
    }
}

/// What was last told, so lines go out only on change.
#[derive(Default)]
pub struct Told {
    /// Workers replaced so far, by reason (`Restart::as_str`).
    restarts: std::collections::BTreeMap<&'static str, u64>,
    states: Option<(u64, u64)>,
    rss_at: Option<Instant>,
}

impl Arbiter {
    pub(super) fn count_restart(&mut self, why: Restart) {
        *self.told.restarts.entry(why.as_str()).or_default() += 1;
        self.tell_edges(&Control::Restart {
            reason: why.as_str().to_string(),
            count: 1,
        });
    }

    /// Every restart so far, by reason, for a new edge: a reload starts
    /// one, and its metrics would otherwise forget them (counters that fall
    /// back to zero at each deploy).
    pub(super) fn restart_totals(&self) -> Vec<Control> {
        self.told
            .restarts
            .iter()
            .map(|(reason, &count)| Control::Restart {
                reason: reason.to_string(),
                count,
            })
            .collect()
    }

    /// Every turn: booting and draining counts when they change, and the
    /// workers' RSS every few seconds.
    pub(super) fn report_workers(&mut self) {
        let booting = self
            .workers
            .values()
            .filter(|w| !w.ready && !w.retiring)
            .count() as u64;
        let draining = self.workers.values().filter(|w| w.retiring).count() as u64;
        if self.told.states != Some((booting, draining)) {
            self.told.states = Some((booting, draining));
            self.tell_edges(&Control::Workers { booting, draining });
        }
        if self.told.rss_at.is_some_and(|t| t.elapsed() < RSS_EVERY) {
            return;
        }
        self.told.rss_at = Some(Instant::now());
        let samples: Vec<Control> = self
            .workers
            .iter()
            .filter(|(_, w)| w.ready && !w.retiring)
            .filter_map(|(pid, w)| {
                let bytes = super::sizing::rss_of(pid.as_raw())?;
                Some(Control::Rss { id: w.id, bytes })
            })
            .collect();
        for s in &samples {
            self.tell_edges(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycle_reasons_name_their_setting() {
        let r = Restart::of_recycle("served 1000 requests (max_requests 1000)");
        assert_eq!(r, Restart::MaxRequests);
        let r = Restart::of_recycle("resident memory 300 MiB is over max_rss 256 MiB");
        assert_eq!(r, Restart::MaxRss);
        let r = Restart::of_recycle("older than max_lifetime 3600s");
        assert_eq!(r, Restart::MaxLifetime);
        assert_eq!(Restart::of_recycle("reload"), Restart::Reload);
    }
}
