//! `[app] cpu_scheduling`: every thread of every worker runs under
//! SCHED_BATCH by default and under the default policy when asked; the
//! edge and the master always keep the default policy. Read with
//! util-linux `chrt`, as an operator would check it.
mod common;

use common::*;
use std::process::Command;

/// Each thread of `pid` with its policy as `chrt -p` names it.
fn thread_policies(pid: i32) -> Vec<(String, String)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap_or_else(|e| {
        panic!("cannot list the threads of {pid}: {e}");
    });
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let chrt = Command::new("chrt")
            .args(["-p", &tid])
            .output()
            .expect("run chrt (util-linux)");
        let text = String::from_utf8_lossy(&chrt.stdout).into_owned();
        // "pid 123's current scheduling policy: SCHED_BATCH"
        let Some(policy) = text
            .lines()
            .find_map(|l| l.split("scheduling policy: ").nth(1))
        else {
            continue; // the thread ended meanwhile
        };
        out.push((tid, policy.trim().to_string()));
    }
    out
}

fn hello_site(app_extra: &str) -> Site {
    Site::new().app("hello.py").config(&format!(
        "[server]\nlisten = [\"127.0.0.1:{{port}}\"]\nedge_threads = 2\n\n\
         [app]\nmodule = \"hello:application\"\nchdir = \".\"\nworkers = 2\n{app_extra}"
    ))
}

/// Fails unless every thread of `pid` runs under `want` (and it has the
/// threads it should: a worker's and the edge's helpers).
fn assert_threads_under(srv: &Running, what: &str, pid: i32, want: &str) {
    let threads = thread_policies(pid);
    if threads.len() < 2 {
        srv.fail(format!(
            "{what} {pid}: expected several threads, got {threads:?}"
        ));
    }
    let wrong: Vec<_> = threads.iter().filter(|(_, p)| p != want).collect();
    if !wrong.is_empty() {
        srv.fail(format!("{what} {pid}: threads not under {want}: {wrong:?}"));
    }
}

/// Asserts every worker thread runs under `workers`, and the edge and the
/// master under SCHED_OTHER.
fn assert_policies(srv: &Running, workers: &str) {
    let r = srv.get("/");
    srv.assert_status(&r, 200, "GET /");
    let pids = srv.worker_pids();
    if pids.len() < 2 {
        srv.fail(format!("expected 2 workers, found {pids:?}"));
    }
    for pid in pids {
        assert_threads_under(srv, "worker", pid, workers);
    }
    for pid in srv.edge_pids() {
        assert_threads_under(srv, "edge", pid, "SCHED_OTHER");
    }
    let master = thread_policies(srv.pid());
    if master.iter().any(|(_, p)| p != "SCHED_OTHER") {
        srv.fail(format!("the master should stay on SCHED_OTHER: {master:?}"));
    }
}

#[test]
fn workers_run_as_batch_by_default_the_edge_does_not() {
    let srv = hello_site("").start();
    assert_policies(&srv, "SCHED_BATCH");
}

#[test]
fn normal_scheduling_leaves_the_default_policy() {
    let srv = hello_site("cpu_scheduling = \"normal\"\n").start();
    assert_policies(&srv, "SCHED_OTHER");
}
