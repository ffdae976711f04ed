//! Requests sent ahead to a busy single-threaded worker (the edge→worker
//! hop, `edge/app/pool.rs` "Ahead"): never stuck behind a slow request
//! while another worker is free, never run twice, and never lost when a
//! worker dies with one waiting in its socket.
mod common;

use common::*;
use std::collections::HashMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

fn ledger_site(workers: u32, extra: &str) -> Running {
    let srv = Site::new()
        .app("ledger.py")
        .config(&app_config("ledger:application", workers, extra))
        .start();
    if !srv.wait_worker_count(workers as usize, Duration::from_secs(10)) {
        srv.fail(format!(
            "expected {workers} workers, have {:?}",
            srv.worker_pids()
        ));
    }
    srv
}

/// Every run the app made: request id → the pids it ran in.
fn ledger(srv: &Running) -> HashMap<String, Vec<u32>> {
    let text = std::fs::read_to_string(srv.path().join("ledger.txt")).unwrap_or_default();
    let mut runs: HashMap<String, Vec<u32>> = HashMap::new();
    for line in text.lines() {
        let (id, pid) = line.split_once(' ').expect("ledger line");
        runs.entry(id.to_string())
            .or_default()
            .push(pid.parse().expect("pid"));
    }
    runs
}

fn assert_none_ran_twice(runs: &HashMap<String, Vec<u32>>, log: &str) {
    let twice: Vec<_> = runs.iter().filter(|(_, pids)| pids.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "requests that ran twice: {twice:?}\n{log}"
    );
}

/// Starts `threads` clients running `/run` requests of `seconds` each.
fn ledger_load(srv: &Running, threads: usize, seconds: f64) -> Load {
    let load = Load::start(
        srv.port,
        LoadOpts {
            threads,
            ..LoadOpts::default()
        },
        move |t, seq| format!("/run?id=t{t}-{seq}&s={seconds}"),
    );
    if !load.wait_more(40, Duration::from_secs(10)) {
        srv.fail("the load made no progress");
    }
    load
}

/// curl GET: (status, body, seconds it took).
fn curl(port: u16, path: &str) -> (u16, String, f64) {
    curl_with(port, path, &[])
}

/// curl with more arguments: (status, body, seconds it took).
fn curl_with(port: u16, path: &str, args: &[String]) -> (u16, String, f64) {
    let t0 = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        body.to_string(),
        t0.elapsed().as_secs_f64(),
    )
}

/// Starts `curl` on `path` after `delay`.
fn curl_after(port: u16, delay_ms: u64, path: &str) -> thread::JoinHandle<(u16, String, f64)> {
    curl_after_with(port, delay_ms, path, Vec::new())
}

fn curl_after_with(
    port: u16,
    delay_ms: u64,
    path: &str,
    args: Vec<String>,
) -> thread::JoinHandle<(u16, String, f64)> {
    let path = path.to_string();
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(delay_ms));
        curl_with(port, &path, &args)
    })
}

/// The head-of-line test. Two workers: `medium` (1 s) starts, then
/// `slow` (6 s); `behind` arrives with both busy and is sent ahead behind
/// `slow`, the request that started last. When `medium` ends, its worker is
/// free and nobody is queued: `behind` must be taken back from behind
/// `slow` and run there, at once, once.
#[test]
fn a_request_ahead_of_a_slow_one_moves_to_the_worker_that_comes_free() {
    assert_behind_runs_on_the_worker_that_comes_free(Vec::new(), 400, 400.0);
}

/// The same, with `behind` ahead for only ~100 ms when `medium` ends:
/// within its patience (twice the typical request), so the free worker's
/// lease is sent to it (a rescue) rather than it being recalled to the
/// queue; its wait still counts as queueing.
#[test]
fn a_request_just_sent_ahead_is_rescued_by_the_worker_that_comes_free() {
    assert_behind_runs_on_the_worker_that_comes_free(Vec::new(), 900, 50.0);
}

/// The same with a body larger than a Unix socket's send buffer: written
/// ahead, its writer would block until `slow` ends, deaf to the rescue; so
/// it queues instead, and still runs as soon as `medium` ends.
#[test]
fn a_request_with_a_large_body_waits_in_the_queue_not_ahead() {
    let srv_dir = tempfile::tempdir().expect("tempdir");
    let body = srv_dir.path().join("body");
    std::fs::write(&body, vec![b'x'; 900 * 1024]).expect("body file");
    let post = format!("@{}", body.display());
    let args = vec!["--data-binary".into(), post];
    assert_behind_runs_on_the_worker_that_comes_free(args, 400, 400.0);
}

/// `behind` comes at `behind_at_ms` (medium ends at 1 s) and must have
/// waited (queue_ms) at least `waited_ms`.
fn assert_behind_runs_on_the_worker_that_comes_free(
    behind_args: Vec<String>,
    behind_at_ms: u64,
    waited_ms: f64,
) {
    let srv = ledger_site(2, "queue_timeout = \"30s\"");
    let port = srv.port;
    let medium = curl_after(port, 0, "/run?id=medium&s=1");
    let slow = curl_after(port, 150, "/run?id=slow&s=6");
    let behind = curl_after_with(port, behind_at_ms, "/run?id=behind", behind_args);
    let (status, body, took) = behind.join().expect("behind");
    let (m_status, m_body, _) = medium.join().expect("medium");
    let (s_status, s_body, _) = slow.join().expect("slow");
    let log = || format!("ledger {:?}\n{}", ledger(&srv), srv.stderr());
    assert_eq!((m_status, s_status, status), (200, 200, 200), "{}", log());
    // Without the rescue it would have waited for `slow`: about 5.6 s.
    assert!(
        took < 2.5,
        "the request waited {took:.2} s behind the slow one while a worker was free\n{}",
        log()
    );
    assert_eq!(
        body.trim(),
        m_body.trim(),
        "it should run where `medium` ran\n{}",
        log()
    );
    assert_ne!(body.trim(), s_body.trim(), "{}", log());
    let runs = ledger(&srv);
    for id in ["medium", "slow", "behind"] {
        assert_eq!(
            runs.get(id).map(Vec::len),
            Some(1),
            "{id} ran once\n{}",
            log()
        );
    }
    // Its wait, ahead or queued, until `medium` ended is queueing in the
    // access log, not time in the app.
    let logged = srv.stdout();
    let line = logged.lines().find(|l| l.contains("/run?id=behind"));
    let queue_ms = line
        .and_then(|l| l.split("queue_ms=").nth(1))
        .and_then(|v| v.split(' ').next()?.parse::<f64>().ok());
    assert!(
        queue_ms.is_some_and(|ms| ms >= waited_ms),
        "queue_ms in {line:?}\n{}",
        log()
    );
    // The worker that had it ahead skipped it and goes on serving.
    for i in 0..4 {
        assert_eq!(curl(port, &format!("/run?id=after{i}")).0, 200, "{}", log());
    }
}

/// A request ahead of a request that outlasts `queue_timeout` gets the
/// queue's 503 (it never ran), exactly as if it had waited in the queue.
#[test]
fn a_request_ahead_gets_the_queue_timeout_and_never_runs() {
    let srv = ledger_site(1, "queue_timeout = \"500ms\"");
    let port = srv.port;
    let slow = curl_after(port, 0, "/run?id=slow&s=2");
    let behind = curl_after(port, 200, "/run?id=behind");
    let (status, body, took) = behind.join().expect("behind");
    let log = || format!("ledger {:?}\n{}", ledger(&srv), srv.stderr());
    assert_eq!(status, 503, "{body}\n{}", log());
    assert!(body.contains("queue timeout"), "{body}");
    assert!(
        (0.4..1.5).contains(&took),
        "503 after {took:.2} s\n{}",
        log()
    );
    assert_eq!(slow.join().expect("slow").0, 200, "{}", log());
    assert_eq!(curl(port, "/run?id=next").0, 200, "{}", log());
    let runs = ledger(&srv);
    assert!(
        !runs.contains_key("behind"),
        "the withdrawn request ran\n{}",
        log()
    );
    assert_eq!(runs.get("next").map(Vec::len), Some(1), "{}", log());
}

/// kill -9 under load while workers hold requests ahead: every request is
/// answered; a request the dead worker had not started is retried on
/// another (200), only one it was running may get a 502, and no request
/// ever runs twice. (`retry_idempotent` is off here: it runs the GET a
/// killed worker was running once more, on purpose; this test is about
/// the requests it had not started.)
#[test]
fn kill_9_with_requests_ahead_loses_none_and_runs_none_twice() {
    const KILLS: usize = 6;
    let srv = ledger_site(2, "queue_timeout = \"20s\"\nretry_idempotent = false");
    let load = ledger_load(&srv, 6, 0.02);
    let mut killed = 0;
    while killed < KILLS {
        thread::sleep(Duration::from_millis(400));
        if let Some(&victim) = srv.worker_pids().first() {
            killed += usize::from(send_signal(victim, "KILL"));
        }
    }
    if !srv.wait_worker_count(2, Duration::from_secs(20)) {
        srv.fail("the pool did not come back to 2 workers");
    }
    load.wait_more(50, Duration::from_secs(10));
    let report = load.finish();
    let runs = ledger(&srv);
    let log = || format!("{}\n{}", report.summary(20), srv.stderr());
    assert_none_ran_twice(&runs, &log());
    let mut bad_gateway = 0;
    for o in &report.outcomes {
        let id = o.path.split("id=").nth(1).and_then(|s| s.split('&').next());
        let id = id.unwrap_or_default();
        match o.status {
            Some(200) => assert_eq!(
                runs.get(id).map(Vec::len),
                Some(1),
                "{id} answered 200 but ran {:?}\n{}",
                runs.get(id),
                log()
            ),
            Some(502) => bad_gateway += 1,
            _ => panic!("{o} was lost\n{}", log()),
        }
    }
    // One request runs in a worker at a time: a kill costs at most that one.
    assert!(
        bad_gateway <= killed,
        "{bad_gateway} requests got 502 for {killed} kills\n{}",
        log()
    );
    assert!(report.ok_count() > 200, "{}", log());
}

/// The same under a steady load, where no worker is ever idle (there is
/// always a queue): a request that landed ahead of a slow one is moved to
/// the next place a worker frees, before the queue is served, rather than
/// wait out the slow one.
#[test]
fn under_load_no_request_waits_out_a_slow_one() {
    let srv = ledger_site(2, "queue_timeout = \"30s\"");
    let load = ledger_load(&srv, 4, 0.03);
    let slow = curl_after(srv.port, 0, "/run?id=slow&s=4");
    let (status, _, took) = slow.join().expect("slow");
    load.wait_more(20, Duration::from_secs(10));
    let report = load.finish();
    let log = || format!("{}\n{}", report.summary(10), srv.stderr());
    assert_eq!(status, 200, "{}", log());
    assert!(took >= 4.0, "{took}");
    assert!(report.failures().is_empty(), "{}", log());
    // 30 ms requests on 2 workers with 4 clients: each waits for at most a
    // couple of others, plus the patience before a move (60 ms here).
    let waited: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.took > Duration::from_secs(1))
        .collect();
    assert!(
        waited.is_empty(),
        "{} requests waited behind the slow one, e.g. {}\n{}",
        waited.len(),
        waited[0],
        log()
    );
    assert_none_ran_twice(&ledger(&srv), &log());
}

/// A client that gives up while its request waits ahead: the worker skips
/// the request (the edge closed its link), so the app never runs it, and
/// the next request is served as usual.
#[test]
fn a_request_ahead_whose_client_left_never_runs() {
    let srv = ledger_site(1, "queue_timeout = \"30s\"");
    let port = srv.port;
    let slow = curl_after(port, 0, "/run?id=slow&s=1.5");
    thread::sleep(Duration::from_millis(200));
    let gone = Command::new("curl")
        .args(["-sS", "--max-time", "0.4"])
        .arg(format!("http://127.0.0.1:{port}/run?id=gone"))
        .output()
        .expect("curl runs");
    assert!(!gone.status.success(), "curl should have given up");
    assert_eq!(slow.join().expect("slow").0, 200);
    assert_eq!(curl(port, "/run?id=next").0, 200);
    let runs = ledger(&srv);
    let log = || format!("ledger {runs:?}\n{}", srv.stderr());
    assert!(
        !runs.contains_key("gone"),
        "the abandoned request ran\n{}",
        log()
    );
    assert_eq!(runs.get("next").map(Vec::len), Some(1), "{}", log());
}

/// Recycling (`max_requests`) under a load that keeps a request ahead of
/// each worker: a worker that leaves serves what it was sent, or hands it
/// back unrun to go elsewhere. Every request is answered 200, and each ran
/// exactly once.
#[test]
fn recycling_with_requests_ahead_loses_none_and_runs_none_twice() {
    let srv = ledger_site(2, "max_requests = 8\nqueue_timeout = \"30s\"");
    let load = ledger_load(&srv, 6, 0.02);
    let (_, log) = all_answered_200_and_ran_once(&srv, load, 300);
    let recycles = srv.stderr().matches("recycling worker").count();
    assert!(recycles >= 10, "{recycles} recycles\n{log}");
}

/// Graceful reloads (SIGHUP) under the same load: every worker is replaced
/// while requests wait ahead of it; none is lost and none runs twice.
#[test]
fn reloads_with_requests_ahead_lose_none_and_run_none_twice() {
    let srv = ledger_site(2, "queue_timeout = \"30s\"");
    let load = ledger_load(&srv, 6, 0.02);
    for _ in 0..3 {
        assert!(send_signal(srv.pid(), "HUP"), "HUP");
        thread::sleep(Duration::from_millis(1500));
    }
    let (runs, log) = all_answered_200_and_ran_once(&srv, load, 100);
    // Each reload's workers served some of it: 2, then 2 per reload.
    let pids: std::collections::HashSet<_> = runs.values().flatten().collect();
    assert!(pids.len() >= 6, "served by {pids:?}\n{log}");
}

/// Ends `load` after `more` requests; every one was answered 200 and ran
/// exactly once. Returns the ledger and the log for later messages.
fn all_answered_200_and_ran_once(
    srv: &Running,
    load: Load,
    more: u64,
) -> (HashMap<String, Vec<u32>>, String) {
    let enough = load.wait_more(more, Duration::from_secs(60));
    let report = load.finish();
    let runs = ledger(srv);
    let log = format!("{}\n{}", report.summary(20), srv.stderr());
    assert!(enough, "the load stalled\n{log}");
    assert_each_answered_200_and_ran_once(&report, &runs, &log);
    (runs, log)
}

fn assert_each_answered_200_and_ran_once(
    report: &LoadReport,
    runs: &HashMap<String, Vec<u32>>,
    log: &str,
) {
    assert_none_ran_twice(runs, log);
    for o in &report.outcomes {
        let id = o.path.split("id=").nth(1).and_then(|s| s.split('&').next());
        let id = id.unwrap_or_default();
        assert_eq!(o.status, Some(200), "{o}\n{log}");
        assert_eq!(runs.get(id).map(Vec::len), Some(1), "{id}\n{log}");
    }
}
