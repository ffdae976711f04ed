//! How Linux schedules the workers (`[app] cpu_scheduling`).
//!
//! On a busy server the edge and the workers wake each other for every
//! request: the edge writes a request, a worker writes its answer. Under
//! the default policy a woken worker preempts the edge on its core at
//! once, cutting the edge's event loop in the middle: two context switches
//! per hand-off. Under SCHED_BATCH the woken worker waits until the edge
//! blocks or uses up its slice; the share of CPU stays fair, only wake-up
//! preemption goes. Measured on 2 cores (hello, `wrk -c64`): workers
//! preempted the edge 0.33 times per request under the default policy,
//! 0.10 under batch; 13-16% more requests per second.
//!
//! The edge keeps the default policy: a batch edge waited for the running
//! process to block before taking a new connection, and TLS handshakes per
//! second halved; it must also answer at once (static files, health
//! checks) while Python keeps the cores busy.

use crate::config::schema::CpuScheduling;
use tracing::warn;

/// Puts the calling worker thread, and every thread it starts afterwards,
/// under `policy`. A refusal (a sandbox that forbids the call) is logged
/// and the worker goes on under the default policy.
pub fn apply(policy: CpuScheduling) {
    let which = match policy {
        CpuScheduling::Batch => libc::SCHED_BATCH,
        CpuScheduling::Normal => return,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, which, &param) } != 0 {
        let e = std::io::Error::last_os_error();
        warn!("worker: cannot use SCHED_BATCH, staying on the default policy: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> i32 {
        // SAFETY: no pointers; pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn batch_applies_to_the_thread_and_those_it_starts() {
        std::thread::spawn(|| {
            apply(CpuScheduling::Batch);
            assert_eq!(current(), libc::SCHED_BATCH);
            let child = std::thread::spawn(current).join().unwrap();
            assert_eq!(
                child,
                libc::SCHED_BATCH,
                "a thread started later inherits it"
            );
        })
        .join()
        .unwrap();
        std::thread::spawn(|| {
            apply(CpuScheduling::Normal);
            assert_eq!(current(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
