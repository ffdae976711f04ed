//! The FIFO queue in front of the workers: ordering, queue_size and
//! queue_timeout (503 + Retry-After).
mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

fn echo_server(app_extra: &str) -> Running {
    Site::new()
        .app("echo_environ.py")
        .config(&app_config("echo_environ:application", 1, app_extra))
        .start()
}

#[test]
fn one_worker_serves_queued_requests_in_order() {
    let srv = echo_server("queue_timeout = \"30s\"");
    let port = srv.port;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..4u32)
        .map(|i| {
            thread::spawn(move || {
                // Start 50 ms apart so the arrival order is well defined.
                let start_at = Duration::from_millis(50 * u64::from(i));
                if let Some(wait) = start_at.checked_sub(t0.elapsed()) {
                    thread::sleep(wait);
                }
                let r = try_request_timeout(
                    port,
                    &get_req(port, &format!("/sleep?s=0.5&i={i}")),
                    Duration::from_secs(30),
                );
                (i, r, t0.elapsed())
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.join().expect("client thread panicked"));
    }
    let mut summary = String::new();
    for (i, r, t) in &results {
        match r {
            Ok(resp) => summary.push_str(&format!("  #{i}: {} after {t:?}\n", resp.status)),
            Err(e) => summary.push_str(&format!("  #{i}: error {e} after {t:?}\n")),
        }
    }
    for (i, r, _) in &results {
        match r {
            Ok(resp) if resp.status == 200 => {}
            _ => srv.fail(format!("request #{i} did not get a 200:\n{summary}")),
        }
    }
    let mut by_finish: Vec<(Duration, u32)> = results.iter().map(|(i, _, t)| (*t, *i)).collect();
    by_finish.sort();
    let order: Vec<u32> = by_finish.iter().map(|(_, i)| *i).collect();
    assert_eq!(
        order,
        vec![0, 1, 2, 3],
        "requests should complete in arrival (FIFO) order:\n{summary}"
    );
    let total = by_finish.last().map(|(t, _)| *t).unwrap_or_default();
    assert!(
        total >= Duration::from_millis(1900),
        "4 x 0.5 s on one worker must take >= 2 s (one request at a time), took {total:?}:\n{summary}"
    );
    // Each one finishes roughly 0.5 s after the previous one.
    for w in by_finish.windows(2) {
        let gap = w[1].0.saturating_sub(w[0].0);
        assert!(
            gap >= Duration::from_millis(250),
            "requests overlapped on a single worker (gap {gap:?}):\n{summary}"
        );
    }
}

#[test]
fn full_queue_gives_503_with_retry_after() {
    let srv = echo_server("queue_size = 1\nqueue_timeout = \"30s\"");
    let port = srv.port;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..4u32)
        .map(|i| {
            thread::spawn(move || {
                let start_at = Duration::from_millis(100 * u64::from(i));
                if let Some(wait) = start_at.checked_sub(t0.elapsed()) {
                    thread::sleep(wait);
                }
                let sent = t0.elapsed();
                let r = try_request_timeout(
                    port,
                    &get_req(port, &format!("/sleep?s=1&i={i}")),
                    Duration::from_secs(30),
                );
                (i, r, sent, t0.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread panicked"))
        .collect();
    let mut summary = String::new();
    for (i, r, sent, done) in &results {
        match r {
            Ok(resp) => summary.push_str(&format!(
                "  #{i}: {} (Retry-After: {:?}) sent at {sent:?}, done at {done:?}\n",
                resp.status,
                resp.header("retry-after")
            )),
            Err(e) => summary.push_str(&format!(
                "  #{i}: error {e} (sent at {sent:?}, done at {done:?})\n"
            )),
        }
    }
    let mut ok = 0;
    let mut rejected = 0;
    for (i, r, _, _) in &results {
        match r {
            Ok(resp) if resp.status == 200 => ok += 1,
            Ok(resp) if resp.status == 503 => {
                let ra = resp.header("retry-after").unwrap_or("").trim();
                if ra.is_empty() {
                    srv.fail(format!(
                        "503 for request #{i} without a Retry-After header\n{resp}\n{summary}"
                    ));
                }
                rejected += 1;
            }
            _ => srv.fail(format!("request #{i}: expected 200 or 503:\n{summary}")),
        }
    }
    if ok == 0 || rejected == 0 {
        srv.fail(format!(
            "with 1 worker, queue_size = 1 and 4 concurrent 1 s requests, expected some 200s and at least one 503 (got {ok} x 200, {rejected} x 503):\n{summary}"
        ));
    }
    // The first request got the worker, so it must have succeeded.
    assert!(
        matches!(&results[0].1, Ok(r) if r.status == 200),
        "the first request should have been served:\n{summary}"
    );
}

#[test]
fn queue_timeout_gives_503_with_retry_after() {
    let srv = echo_server("queue_timeout = \"300ms\"");
    let port = srv.port;
    let slow = thread::spawn(move || {
        try_request_timeout(port, &get_req(port, "/sleep?s=2"), Duration::from_secs(30))
    });
    // Let the slow request reach the only worker.
    thread::sleep(Duration::from_millis(400));
    let t = Instant::now();
    let r = try_request_timeout(port, &get_req(port, "/pid"), Duration::from_secs(30));
    let waited = t.elapsed();
    let r = r.unwrap_or_else(|e| srv.fail(format!("queued request failed after {waited:?}: {e}")));
    srv.assert_status(
        &r,
        503,
        "request stuck behind a 2 s request with queue_timeout = 300ms",
    );
    assert!(
        r.header("retry-after")
            .map(|v| !v.trim().is_empty())
            .unwrap_or(false),
        "503 without Retry-After\n{r}"
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "the 503 should come after ~0.3 s in the queue (got it after {waited:?})"
    );
    let slow = slow.join().expect("slow client thread panicked");
    match slow {
        Ok(resp) => srv.assert_status(&resp, 200, "the 2 s request"),
        Err(e) => srv.fail(format!("the 2 s request failed: {e}")),
    }
    // The queue recovers.
    let r = srv.get("/pid");
    srv.assert_status(&r, 200, "GET /pid after the queue drained");
}

/// A client that gives up while its request waits in the queue takes the
/// request with it: the app never runs it, and the access log says 499.
/// (The edge used to notice only once a worker took the request, 50 ms
/// into its run: CI caught the app running one that had waited 600 ms.)
#[test]
fn a_queued_request_whose_client_left_never_runs() {
    let srv = echo_server("");
    // One running, two written ahead to the one worker, two queued: the
    // next one queues behind them.
    let sleepers = sleepers(srv.port, 5, "0.4");
    leave_while_queued(srv.port, "left-queued", Duration::from_millis(300));
    for s in sleepers {
        assert_eq!(s.join().unwrap().ok(), Some(200), "{}", srv.stderr_tail());
    }
    thread::sleep(Duration::from_millis(500));
    assert_never_ran(&srv, "left-queued");
}

/// A request whose client left gives its place in the queue back at once:
/// with `queue_size = 3` and the queue full, one client leaving lets the
/// next one in (it would get a 503 while the departed one still counted).
#[test]
fn a_client_that_left_the_queue_frees_its_place() {
    let srv = echo_server("queue_size = 3\nqueue_timeout = \"30s\"");
    let port = srv.port;
    // One running, two in the worker's places ahead: the queue's three.
    let sleepers = sleepers(port, 3, "0.6");
    leave_while_queued(port, "gave-up", Duration::from_millis(150));
    thread::sleep(Duration::from_millis(150));
    let next = try_request_timeout(port, &get_req(port, "/pid"), Duration::from_secs(20));
    for s in sleepers {
        assert_eq!(s.join().unwrap().ok(), Some(200), "{}", srv.stderr_tail());
    }
    match next {
        Ok(r) => srv.assert_status(&r, 200, "the request after the one whose client left"),
        Err(e) => srv.fail(format!("the request after the one whose client left: {e}")),
    }
    assert_never_ran(&srv, "gave-up");
}

/// `n` clients, each asking for a `/sleep` of `secs`: their statuses.
fn sleepers(port: u16, n: usize, secs: &str) -> Vec<thread::JoinHandle<std::io::Result<u16>>> {
    let handles = (0..n)
        .map(|i| {
            let get = get_req(port, &format!("/sleep?s={secs}&n={i}"));
            thread::spawn(move || {
                try_request_timeout(port, &get, Duration::from_secs(20)).map(|r| r.status)
            })
        })
        .collect();
    // Let them reach the worker and the queue before anyone else.
    thread::sleep(Duration::from_millis(150));
    handles
}

/// Asks for a file named `marker` to be made, and closes the connection
/// `after` this long, before any answer.
fn leave_while_queued(port: u16, marker: &str, after: Duration) {
    let mut left = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let get = get_req(port, &format!("/gen?n=1&marker={marker}"));
    std::io::Write::write_all(&mut left, &get).expect("send");
    thread::sleep(after);
}

/// The request that made `marker` is logged as 499 and the app never ran it.
fn assert_never_ran(srv: &Running, marker: &str) {
    assert!(
        srv.wait_for_stdout(&format!("marker={marker}"), Duration::from_secs(5)),
        "no access line: {}",
        srv.stdout()
    );
    let out = srv.stdout();
    let line = out.lines().find(|l| l.contains(marker)).unwrap_or_default();
    assert!(line.contains(" 499 "), "{line}");
    assert!(!srv.path().join(marker).exists(), "the app ran it: {line}");
}
