//! A storm of `kill -9` on random workers under load: only the requests
//! that were running in a killed worker may fail (502), every other request
//! succeeds, each death is explained in the log, and the pool is back to
//! full strength afterwards.
mod common;

use common::*;
use std::time::{Duration, Instant};

const WORKERS: usize = 3;
const STORM: Duration = Duration::from_secs(10);
const KILL_EVERY: Duration = Duration::from_millis(300);

#[test]
fn kill_9_storm_fails_only_the_requests_in_killed_workers() {
    let srv = Site::new()
        .app("lifecycle_app.py")
        .config(&app_config(
            "lifecycle_app:application",
            WORKERS as u32,
            // Bounds how long a request may wait for a worker (a 503 after that).
            "queue_timeout = \"10s\"",
        ))
        .start();
    if !srv.wait_worker_count(WORKERS, Duration::from_secs(10)) {
        srv.fail(format!(
            "expected {WORKERS} workers at start, have {:?}",
            srv.worker_pids()
        ));
    }
    let first_edges = srv.edge_pids();

    let load = Load::start(
        srv.port,
        LoadOpts {
            threads: 4,
            ..LoadOpts::default()
        },
        |_, _| "/sleep?s=0.05".to_string(),
    );
    if !load.wait_more(20, Duration::from_secs(10)) {
        srv.fail("the load clients made no progress before the storm");
    }

    let mut rng = XorShift::from_clock();
    let mut killed = Vec::new();
    let mut skipped = 0;
    let t0 = Instant::now();
    let mut next = t0;
    while t0.elapsed() < STORM {
        let workers = srv.worker_pids();
        if workers.is_empty() {
            skipped += 1;
        } else {
            let victim = workers[rng.below(workers.len() as u64) as usize];
            if send_signal(victim, "KILL") {
                killed.push((t0.elapsed(), victim, workers.len()));
            }
        }
        next += KILL_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    eprintln!(
        "killed {} workers in {:?} ({skipped} times no ready worker to kill): {:?}",
        killed.len(),
        t0.elapsed(),
        killed
    );

    // Recovery: all workers back, still one edge, and it serves. (35 s: more
    // than the master's longest respawn backoff, 30 s.)
    let recovered = srv.wait_worker_count(WORKERS, Duration::from_secs(35));
    let after = Instant::now();
    load.wait_more(20, Duration::from_secs(15));
    let report = load.finish();
    eprintln!("load during the storm: {}", report.summary(40));
    if !recovered {
        srv.fail(format!(
            "{:?} after the storm the pool is not back to {WORKERS} workers: ready {:?}, non-edge children {:?}\nload: {}",
            after.elapsed(),
            srv.worker_pids(),
            srv.non_edge_children(),
            report.summary(20)
        ));
    }

    // Collect every problem, then fail once with all of them.
    let mut problems = Vec::new();
    let failures = report.failures();
    let not_502: Vec<_> = failures.iter().filter(|o| o.status != Some(502)).collect();
    if !not_502.is_empty() {
        problems.push(format!(
            "{} requests failed with something other than a 502 (only requests inside a killed worker may fail, and they must get a 502):\n{}",
            not_502.len(),
            not_502.iter().take(20).map(|o| format!("    {o}\n")).collect::<String>()
        ));
    }
    // A sync worker runs one request at a time, so a kill should cost at
    // most the request it was running. Known residual race (issue 5 notes):
    // a request written to a worker's socket in the instant the kernel tears
    // it down can look delivered and get a 502 too, so some slack is
    // allowed. The bugs this guards against (dispatching to a dead worker,
    // re-announcing a killed but unreaped one) cost 2-4 failures per kill.
    let allowed = killed.len() + killed.len() / 4;
    if failures.len() > allowed {
        problems.push(format!(
            "{} requests failed but only {} workers were killed (at most {allowed} failures allowed)",
            failures.len(),
            killed.len()
        ));
    }
    // A worker boots in well under a second: with 3 workers and a kill every
    // 300 ms, the pool must never be empty for long.
    let slow: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.took > Duration::from_secs(5))
        .collect();
    if !slow.is_empty() {
        problems.push(format!(
            "{} requests took more than 5 s (the pool was empty for a long time: respawn delayed?), e.g.:\n{}",
            slow.len(),
            slow.iter().take(5).map(|o| format!("    {o}\n")).collect::<String>()
        ));
    }
    if killed.len() < 20 {
        problems.push(format!(
            "only {} kills in {STORM:?} (expected about {}): {skipped} times there was no ready worker to kill",
            killed.len(),
            STORM.as_millis() / KILL_EVERY.as_millis()
        ));
    }
    if report.ok_count() < 100 {
        problems.push(format!(
            "only {} successful requests during the storm",
            report.ok_count()
        ));
    }
    if !problems.is_empty() {
        srv.fail(format!(
            "kill -9 storm ({} kills: {killed:?}):\n- {}\nload: {}",
            killed.len(),
            problems.join("\n- "),
            report.summary(40)
        ));
    }

    // Every death is explained.
    let log = srv.stderr();
    let explained = count_lines(&log, "was killed by SIGKILL from outside corral");
    if explained < killed.len() {
        srv.fail(format!(
            "{} kills but only {explained} `was killed by SIGKILL from outside corral` lines",
            killed.len()
        ));
    }
    for i in 0..10 {
        let r = srv.get(&format!("/pid?after-storm={i}"));
        srv.assert_status(&r, 200, "GET /pid after the storm");
    }
    let edges = srv.edge_pids();
    if edges != first_edges {
        srv.fail(format!(
            "the edge changed during the storm: {first_edges:?} -> {edges:?}"
        ));
    }
    let kids = srv.children();
    if kids.len() != WORKERS + 1 {
        srv.fail(format!(
            "expected {} children of the master (edge + {WORKERS} workers) after the storm, found {kids:?}",
            WORKERS + 1
        ));
    }
}

/// The focused version: a few kills spaced out (so respawn backoff plays no
/// part), with requests queued for the workers. Each kill may cost the one
/// request the killed worker was running, and nothing else.
#[test]
fn each_kill_costs_at_most_the_request_in_the_killed_worker() {
    let srv = Site::new()
        .app("lifecycle_app.py")
        .config(&app_config(
            "lifecycle_app:application",
            2,
            "queue_timeout = \"10s\"",
        ))
        .start();
    if !srv.wait_worker_count(2, Duration::from_secs(10)) {
        srv.fail(format!(
            "expected 2 workers at start, have {:?}",
            srv.worker_pids()
        ));
    }
    // 4 clients, 2 workers: both always busy, requests always queued.
    let load = Load::start(
        srv.port,
        LoadOpts {
            threads: 4,
            ..LoadOpts::default()
        },
        |_, _| "/sleep?s=0.1".to_string(),
    );
    load.wait_more(10, Duration::from_secs(10));
    let mut rng = XorShift::from_clock();
    let mut killed = Vec::new();
    for round in 0..3 {
        if !srv.wait_worker_count(2, Duration::from_secs(10)) {
            srv.fail(format!(
                "round {round}: the pool is not back to 2 workers: {:?}",
                srv.worker_pids()
            ));
        }
        load.wait_more(8, Duration::from_secs(10));
        let workers = srv.worker_pids();
        let victim = workers[rng.below(workers.len() as u64) as usize];
        if send_signal(victim, "KILL") {
            killed.push((load.elapsed(), victim));
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    load.wait_more(10, Duration::from_secs(10));
    let report = load.finish();
    eprintln!("kills {killed:?}\nload: {}", report.summary(20));
    let failures = report.failures();
    let not_502 = failures.iter().filter(|o| o.status != Some(502)).count();
    if not_502 > 0 || failures.len() > killed.len() {
        srv.fail(format!(
            "{} kills ({killed:?}) but {} failed requests ({not_502} of them not a 502); each kill may fail only the request running in the killed worker:\n{}",
            killed.len(),
            failures.len(),
            report.summary(20)
        ));
    }
}
