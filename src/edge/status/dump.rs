//! `corral dump`: the Python stacks of every worker running a request,
//! each with the requests it runs. Each worker is asked with
//! `ipc::dump_signal()`; its dump thread writes all its threads' stacks to
//! the file beside its socket (`worker/stack_dump.rs`). Nothing is stopped
//! or killed, and an idle worker is not disturbed.

use super::{Inspector, WorkerStatus};
use crate::edge::app::pool::Facts;
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

/// How long a worker gets to write its stacks: its dump thread waits for
/// the GIL, which a running thread gives up every few milliseconds.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// The file is complete once its size holds still this long.
const SETTLED: Duration = Duration::from_millis(100);

#[derive(Serialize)]
pub struct WorkerStacks {
    #[serde(flatten)]
    pub worker: WorkerStatus,
    /// Every thread's Python stack (and an ASGI worker's tasks).
    pub stacks: Option<String>,
    /// Why there are none.
    pub error: Option<String>,
}

pub async fn dump(inspector: &Inspector) -> Vec<WorkerStacks> {
    let report = inspector.pool.report();
    let busy: Vec<_> = report
        .workers
        .iter()
        .filter(|w| !w.running.is_empty())
        .collect();
    // All asked at once, then read in turn: one slow worker delays the
    // others' answers, not their snapshots.
    let asked: Vec<_> = busy.iter().map(|w| ask(&w.facts)).collect();
    let mut out = Vec::new();
    for (w, asked) in busy.into_iter().zip(asked) {
        let stacks = match asked {
            Ok(()) => collect(&w.facts.stacks).await,
            Err(e) => Err(e),
        };
        let (stacks, error) = match stacks {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        out.push(WorkerStacks {
            worker: inspector.worker(w),
            stacks,
            error,
        });
    }
    out
}

/// Empties the worker's stacks file, then signals it.
fn ask(facts: &Facts) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&facts.stacks)
        .and_then(|f| f.set_len(0));
    file.map_err(|e| format!("cannot empty {}: {e}", facts.stacks.display()))?;
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    if unsafe { libc::kill(facts.pid, crate::ipc::dump_signal()) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot signal worker pid {}: {e}", facts.pid));
    }
    Ok(())
}

/// Waits for the file to fill and settle, then reads it.
async fn collect(path: &Path) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    let mut last = 0;
    loop {
        tokio::time::sleep(SETTLED).await;
        let len = tokio::fs::metadata(path).await.map_or(0, |m| m.len());
        if len > 0 && len == last {
            return tokio::fs::read(path)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("cannot read {}: {e}", path.display()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "no stacks within {ANSWER_WITHIN:?} (the worker may be gone or stopped)"
            ));
        }
        last = len;
    }
}

/// `corral dump` on a terminal.
pub fn text(dumped: &[WorkerStacks]) -> String {
    if dumped.is_empty() {
        return "no worker is running a request\n".into();
    }
    let mut out = String::new();
    for d in dumped {
        let w = &d.worker;
        let _ = writeln!(
            out,
            "=== worker {} (pid {}, {}, {}), running:",
            w.id, w.pid, w.interface, w.state
        );
        for r in &w.running {
            let _ = writeln!(
                out,
                "    {} (request {}) for {:.2}s",
                r.request, r.request_id, r.seconds
            );
        }
        if let Some(stacks) = &d.stacks {
            out.push_str(stacks);
        }
        if let Some(e) = &d.error {
            let _ = writeln!(out, "(no stacks: {e})");
        }
        out.push('\n');
    }
    out
}
