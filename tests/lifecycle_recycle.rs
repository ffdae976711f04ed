//! Worker recycling: max_rss, max_requests (+ jitter) and max_lifetime. A
//! worker only asks to be replaced; its replacement is ready before it stops
//! taking requests, so no request fails.
mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn lifecycle_server(workers: u32, app_extra: &str) -> Running {
    let extra = format!("queue_timeout = \"30s\"\n{app_extra}");
    Site::new()
        .app("lifecycle_app.py")
        .config(&app_config("lifecycle_app:application", workers, &extra))
        .start()
}

/// The pid at the start of a lifecycle_app answer ("<pid> ..." / "fast <pid>").
fn pid_in(body: &str) -> Option<i32> {
    body.split_whitespace().find_map(|w| w.parse().ok())
}

#[test]
fn max_rss_recycles_a_leaking_worker_without_failed_requests() {
    let srv = lifecycle_server(2, "max_rss = \"150MiB\"");
    let first = srv.worker_pids();
    let mut pids = Vec::new();
    let mut max_kept = 0;
    let mut trail = Vec::new();
    for i in 0..40 {
        let r = try_request_timeout(
            srv.port,
            &get_req(srv.port, &format!("/leak?mb=30&i={i}")),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| srv.fail(format!("leak request #{i} failed: {e}")));
        if r.status != 200 {
            srv.fail(format!("leak request #{i}: expected 200\n{r}"));
        }
        let text = r.text();
        let mut words = text.split_whitespace();
        let pid: i32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let kept: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        pids.push(pid);
        trail.push(format!("{pid}:{kept}"));
        max_kept = max_kept.max(kept);
    }
    let distinct: BTreeSet<i32> = pids.iter().copied().collect();
    let log = srv.stderr();
    let asks = count_lines(&log, "asks to be recycled: resident memory");
    let recycles = log
        .lines()
        .filter(|l| l.contains("recycling worker") && l.contains("over max_rss"))
        .count();
    eprintln!(
        "40 x 30 MiB leaks: {} distinct worker pids {distinct:?}, at most {max_kept} MiB kept by one worker, {asks} max_rss asks, {recycles} recycles\n(pid:MiB kept after each request) {}",
        distinct.len(),
        trail.join(" ")
    );
    if asks == 0 || recycles == 0 {
        srv.fail(format!(
            "expected `resident memory ... is over max_rss 150 MiB` and `recycling worker ... over max_rss ...` lines (asks {asks}, recycles {recycles})"
        ));
    }
    // 40 x 30 MiB = 1200 MiB: at ~166 MiB (5 leaks) a worker asks, so the
    // pids must change several times, and the first workers go (a replaced
    // worker drains for 300 ms before it exits: on a quick machine the
    // loop above ends before that, so wait for it).
    let first_gone = wait_until(Duration::from_secs(10), || {
        !first.iter().any(|p| srv.worker_pids().contains(p))
    });
    if distinct.len() < 3 || recycles < 2 || !first_gone {
        srv.fail(format!(
            "worker pids should change again and again: answers came from {distinct:?}, first workers {first:?}, now {:?}",
            srv.worker_pids()
        ));
    }
    // A worker asks after the request that crossed the line and keeps
    // serving only until its replacement is ready: it must not keep growing
    // for long (20 leaks = 600 MiB would mean recycling does not work).
    if max_kept >= 600 {
        srv.fail(format!(
            "one worker kept {max_kept} MiB although max_rss is 150 MiB"
        ));
    }
    if !srv.wait_worker_count(2, Duration::from_secs(10)) {
        srv.fail(format!(
            "expected 2 workers after the leaks, have {:?}",
            srv.worker_pids()
        ));
    }
}

#[test]
fn max_requests_with_jitter_recycles_without_failed_requests() {
    let srv = lifecycle_server(2, "max_requests = 20\nmax_requests_jitter = 10");
    // Paced (about 150 requests/s), so that replacements have time to boot
    // between recycles: a worker that asked keeps serving until then.
    let load = Load::start(
        srv.port,
        LoadOpts {
            threads: 4,
            pause: Duration::from_millis(25),
            ..LoadOpts::default()
        },
        |_, _| "/pid".to_string(),
    );
    let finished = load.wait_more(200, Duration::from_secs(60));
    let report = load.finish();
    eprintln!("load: {}", report.summary(30));
    if !finished {
        srv.fail(format!(
            "200 requests did not complete within 60 s: {}",
            report.summary(30)
        ));
    }
    let failures = report.failures();
    if !failures.is_empty() {
        srv.fail(format!(
            "{} of {} requests failed while workers were recycled (expected none):\n{}",
            failures.len(),
            report.total(),
            report.summary(40)
        ));
    }
    // Let the last hand-over finish before reading the log.
    srv.wait_worker_count(2, Duration::from_secs(10));
    let log = srv.stderr();
    let served = recycle_served_counts(&log);
    let recycled = log
        .lines()
        .filter(|l| l.contains("recycling worker") && l.contains("(max_requests "))
        .count();
    let mut per_pid = std::collections::BTreeMap::new();
    for o in &report.outcomes {
        if let Some(p) = pid_in(&o.body) {
            *per_pid.entry(p).or_insert(0usize) += 1;
        }
    }
    eprintln!("asks to be recycled after serving {served:?}; {recycled} recycles; requests per worker pid {per_pid:?}");
    // 200 requests over 2 workers: each worker passes 30 requests, so each
    // of the first two must have asked (normally there are ~6 recycles).
    if served.len() < 2 || recycled < 2 {
        srv.fail(format!(
            "{} requests with max_requests = 20 (+ up to 10) over 2 workers: expected at least 2 recycles, log has {} asks ({served:?}) and {recycled} `recycling worker` lines",
            report.total(),
            served.len()
        ));
    }
    if let Some(bad) = served.iter().find(|k| !(20..=30).contains(*k)) {
        srv.fail(format!(
            "a worker asked to be recycled after {bad} requests; max_requests = 20 and jitter = 10 allow 20..=30 ({served:?})"
        ));
    }
    // 4 or more draws from 20..=30 (11 values) all equal by chance: < 1 in 1000.
    if served.len() >= 4 && served.iter().all(|k| *k == served[0]) {
        srv.fail(format!(
            "every worker asked after exactly {} requests: max_requests_jitter = 10 is not applied ({served:?})",
            served[0]
        ));
    }
}

#[test]
fn max_lifetime_replaces_workers_without_failed_requests() {
    let srv = lifecycle_server(2, "max_lifetime = \"3s\"");
    let first = srv.worker_pids();
    let load = Load::start(
        srv.port,
        LoadOpts {
            threads: 2,
            pause: Duration::from_millis(20),
            ..LoadOpts::default()
        },
        |_, _| "/pid".to_string(),
    );
    let t = Instant::now();
    let replaced = wait_until(Duration::from_secs(15), || {
        let now = srv.worker_pids();
        now.len() == 2 && now.iter().all(|p| !first.contains(p))
    });
    let took = t.elapsed();
    load.wait_more(20, Duration::from_secs(10));
    let report = load.finish();
    eprintln!(
        "workers {first:?} -> {:?} after {took:?}; load: {}",
        srv.worker_pids(),
        report.summary(30)
    );
    if !replaced {
        srv.fail(format!(
            "with max_lifetime = 3s the first workers {first:?} should be gone after a few seconds, workers now {:?}",
            srv.worker_pids()
        ));
    }
    // (The workers were up about 1 s before `t`: the edge starts after them.)
    if took < Duration::from_millis(1500) {
        srv.fail(format!(
            "workers were replaced after {took:?}, before max_lifetime (3s)"
        ));
    }
    if !srv.stderr().contains("older than max_lifetime") {
        srv.fail("no `asks to be recycled: older than max_lifetime` line");
    }
    let failures = report.failures();
    if !failures.is_empty() {
        srv.fail(format!(
            "{} requests failed while workers were replaced for max_lifetime:\n{}",
            failures.len(),
            report.summary(40)
        ));
    }
    let seen: BTreeSet<i32> = report
        .outcomes
        .iter()
        .filter_map(|o| pid_in(&o.body))
        .collect();
    if seen.len() < 3 {
        srv.fail(format!(
            "answers came from only {seen:?}: the load never reached a replacement worker"
        ));
    }
}
