//! app.timeout: a request still running at the deadline gets a 504 from the
//! edge, the worker's Python stacks are dumped to the error log (showing the
//! sleeping frame), the worker is killed and replaced, and the other worker
//! keeps serving quickly meanwhile.
mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

/// The pid in the master's `worker <pid>: GET /sleep... ran past app.timeout` line.
fn timed_out_worker(log: &str, path: &str) -> Option<i32> {
    log.lines()
        .find(|l| l.contains("ran past app.timeout") && l.contains(path))
        .and_then(|l| {
            let at = l.find("worker ")? + "worker ".len();
            let digits: String = l[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
}

#[test]
fn timeout_gives_504_dumps_stacks_and_replaces_the_worker() {
    let srv = Site::new()
        .app("lifecycle_app.py")
        .config(&app_config(
            "lifecycle_app:application",
            2,
            "timeout = \"2s\"\nqueue_timeout = \"30s\"",
        ))
        .start();
    if !srv.wait_worker_count(2, Duration::from_secs(10)) {
        srv.fail(format!(
            "expected 2 workers at start, have {:?}",
            srv.worker_pids()
        ));
    }
    let first_workers = srv.worker_pids();
    let port = srv.port;

    // Fast requests on fresh connections every 100 ms, before, during and
    // after the timeout.
    let t0 = Instant::now();
    let fast = thread::spawn(move || {
        let mut out = Vec::new();
        let mut i = 0;
        while t0.elapsed() < Duration::from_secs(6) {
            let sent = t0.elapsed();
            let t = Instant::now();
            let r = try_request_timeout(
                port,
                &get_req(port, &format!("/fast?i={i}")),
                Duration::from_secs(10),
            );
            out.push((
                i,
                sent,
                t.elapsed(),
                r.map(|r| (r.status, r.text())).map_err(|e| e.to_string()),
            ));
            i += 1;
            thread::sleep(Duration::from_millis(100));
        }
        out
    });

    thread::sleep(Duration::from_millis(300));
    let sent = t0.elapsed();
    let t = Instant::now();
    let r = try_request_timeout(port, &get_req(port, "/sleep?s=10"), Duration::from_secs(15));
    let took = t.elapsed();
    let r = r.unwrap_or_else(|e| {
        srv.fail(format!(
            "GET /sleep?s=10 with timeout = 2s: error after {took:?}: {e}"
        ))
    });
    srv.assert_status(&r, 504, "GET /sleep?s=10 with app.timeout = 2s");
    if !r.text().contains("Gateway Timeout") {
        srv.fail(format!("the 504 body should say Gateway Timeout:\n{r}"));
    }
    if took > Duration::from_secs(3) || took < Duration::from_millis(1800) {
        srv.fail(format!(
            "the 504 came {took:?} after sending (timeout = 2s: expected 2-3 s)"
        ));
    }
    let got_504 = sent + took;
    eprintln!("504 after {took:?}");

    // The log: edge line, master line, the stack dump, the kill, a new worker.
    let edge_line = "GET /sleep?s=10 (request ";
    if !srv.wait_for_stderr("timed out after 2s in worker", Duration::from_secs(5))
        || !srv.stderr().contains(edge_line)
    {
        srv.fail("no edge line `GET /sleep?s=10 (request ...) timed out after 2s in worker ...`");
    }
    if !srv.wait_for_stderr("ran past app.timeout (2s)", Duration::from_secs(5)) {
        srv.fail("no master line `worker <pid>: GET /sleep?s=10 ... ran past app.timeout (2s)`");
    }
    let victim = timed_out_worker(&srv.stderr(), "/sleep?s=10").unwrap_or_else(|| {
        srv.fail("cannot read the worker pid from the `ran past app.timeout` line")
    });
    if !first_workers.contains(&victim) {
        srv.fail(format!(
            "the timed-out worker {victim} is not one of the workers {first_workers:?}"
        ));
    }
    let app_file = srv.path().join("lifecycle_app.py").display().to_string();
    let frame = format!("File \"{app_file}\", line ");
    let has_dump = srv.wait_for_stderr("in lifecycle_sleeper", Duration::from_secs(10));
    let log = srv.stderr();
    let dump_ok = has_dump
        && log
            .lines()
            .any(|l| l.contains(&frame) && l.trim_end().ends_with("in lifecycle_sleeper"))
        && log
            .lines()
            .any(|l| l.contains(&frame) && l.trim_end().ends_with("in application"));
    if !dump_ok {
        srv.fail(format!(
            "expected a Python stack dump with `{frame}N in lifecycle_sleeper` and `... in application`"
        ));
    }
    if !wait_until(Duration::from_secs(10), || !pid_alive(victim)) {
        srv.fail(format!(
            "the timed-out worker {victim} is still alive 10 s later"
        ));
    }
    if !srv.wait_for_stderr(
        &format!("worker {victim} was killed by corral (request timeout: GET /sleep?s=10"),
        Duration::from_secs(5),
    ) {
        srv.fail(format!(
            "no `worker {victim} was killed by corral (request timeout: ...)` line"
        ));
    }
    let replaced = wait_until(Duration::from_secs(10), || {
        let now = srv.worker_pids();
        now.len() == 2 && !now.contains(&victim) && now.iter().any(|p| !first_workers.contains(p))
    });
    if !replaced {
        srv.fail(format!(
            "no replacement worker: workers were {first_workers:?}, now {:?}",
            srv.worker_pids()
        ));
    }

    // The other worker kept answering quickly the whole time.
    let fast = fast.join().expect("fast-request thread panicked");
    let mut problems = Vec::new();
    let mut during = 0;
    for (i, sent_at, took, r) in &fast {
        match r {
            Ok((200, body)) => {
                let while_busy = *sent_at > sent + Duration::from_millis(100) && *sent_at < got_504;
                if while_busy && body.contains(&victim.to_string()) {
                    problems.push(format!("/fast #{i} was served by the busy worker {victim}"));
                }
            }
            Ok((s, body)) => problems.push(format!("/fast #{i} got {s}: {body:?}")),
            Err(e) => problems.push(format!("/fast #{i} failed: {e}")),
        }
        if *took >= Duration::from_secs(1) {
            problems.push(format!("/fast #{i} (sent at {sent_at:?}) took {took:?}"));
        }
        if *sent_at > sent && *sent_at < got_504 {
            during += 1;
        }
    }
    eprintln!(
        "{} /fast requests, {during} while /sleep was running; slowest {:?}",
        fast.len(),
        fast.iter().map(|f| f.2).max().unwrap_or_default()
    );
    if during < 5 {
        problems.push(format!(
            "only {during} /fast requests were made while /sleep ran"
        ));
    }
    if !problems.is_empty() {
        srv.fail(format!(
            "requests to the other worker during the timeout:\n{}",
            problems.join("\n")
        ));
    }

    // The access log has the 504, and the new pool serves.
    if !srv.wait_for_stdout("\"GET /sleep?s=10 HTTP/1.1\" 504 ", Duration::from_secs(5)) {
        srv.fail(format!(
            "no access log line with \"GET /sleep?s=10 HTTP/1.1\" 504 on stdout:\n{}",
            tail(&srv.stdout(), 3000)
        ));
    }
    for i in 0..4 {
        let r = srv.get(&format!("/sleep?s=0.01&after={i}"));
        srv.assert_status(&r, 200, "a short /sleep after the timeout");
    }
}

/// gunicorn's rule: a streamed response that keeps yielding is alive, so
/// app.timeout applies between pieces, not to the whole stream; a stream
/// that stalls is cut, and the access log says so (bytes sent, incomplete).
#[test]
fn a_streaming_response_lives_while_it_yields_and_a_stalled_one_is_logged_incomplete() {
    let srv = Site::new()
        .app("echo_environ.py")
        .config(&app_config(
            "echo_environ:application",
            2,
            "timeout = \"1s\"",
        ))
        .start();
    // 6 pieces 0.4 s apart: 2.4 s in all, well past the 1 s timeout.
    let started = Instant::now();
    let (status, body, out) = curl_fetch(
        &format!(
            "http://127.0.0.1:{}/gen?n=6&size=16&delay=0.4&lead=0",
            srv.port
        ),
        &[],
    );
    assert!(started.elapsed() > Duration::from_secs(2), "{out}");
    assert_eq!((status, body.len()), (200, 96), "{out}");
    // 2 pieces 1.5 s apart: the stall overruns the timeout.
    let (_, body, out) = curl_fetch(
        &format!(
            "http://127.0.0.1:{}/gen?n=3&size=16&delay=1.5&lead=0&cut=1",
            srv.port
        ),
        &[],
    );
    assert!(body.len() < 48, "a stalled stream must be cut: {out}");
    assert!(
        !out.success(),
        "curl must see the cut, not a complete body: {out}"
    );
    let found = wait_until(Duration::from_secs(3), || {
        srv.stdout()
            .lines()
            .any(|l| l.contains("cut=1") && l.ends_with(" incomplete"))
    });
    assert!(found, "access log:\n{}", srv.stdout());
    let whole = srv
        .stdout()
        .lines()
        .find(|l| l.contains("delay=0.4"))
        .unwrap_or_default()
        .to_string();
    assert!(
        whole.contains("\" 200 96 ") && !whole.ends_with("incomplete"),
        "{whole}"
    );
}
