//! A storm of `kill -9` on random workers under GET load: a GET a killed
//! worker was running runs once more on another (`retry_idempotent`), so
//! next to none fail, and only with a 502; each death is explained in the
//! log, and the pool is back to full strength afterwards.
mod common;

use common::*;
use std::time::{Duration, Instant};

const WORKERS: usize = 3;
const STORM: Duration = Duration::from_secs(10);
const KILL_EVERY: Duration = Duration::from_millis(300);

#[test]
fn kill_9_storm_loses_next_to_no_get() {
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
    // A sync worker runs one request at a time, and the GET it was running
    // runs once more elsewhere: the bar is no failure. A GET is lost only
    // when the worker it runs again in is killed too before it answers (a
    // kill every 300 ms, a request of 50 ms and a short queue: rare), so a
    // little slack is allowed. A 502 per kill was the rule before reruns;
    // the bugs this guards against (dispatching to a dead worker,
    // re-announcing a killed but unreaped one) cost 2-4 failures per kill.
    let allowed = killed.len() / 10;
    if failures.len() > allowed {
        problems.push(format!(
            "{} requests failed for {} kills (at most {allowed} allowed: a GET runs again after its worker is killed)",
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
/// part), with requests queued for the workers. The GET a killed worker
/// was running runs again on the other: no request fails. (It was one 502
/// per kill before `retry_idempotent`.)
#[test]
fn spaced_kills_under_load_lose_no_request() {
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
    if !failures.is_empty() || killed.len() < 3 {
        srv.fail(format!(
            "{} kills ({killed:?}) and {} failed requests; a GET whose worker is killed runs again on the other:\n{}",
            killed.len(),
            failures.len(),
            report.summary(20)
        ));
    }
    let reruns = count_lines(&srv.stderr(), "running it once more on another worker");
    if reruns == 0 {
        srv.fail("no kill caught a request running: the test proved nothing".to_string());
    }
}
