//! A worker that dies mid-request: that client gets a 502 (not a hang) and
//! the worker is replaced.
mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

fn pid_of(srv: &Running, r: &Response) -> u32 {
    srv.assert_status(r, 200, "GET /pid");
    r.text()
        .trim()
        .parse()
        .unwrap_or_else(|_| srv.fail(format!("GET /pid did not return a pid\n{r}")))
}

/// Retry GET /pid for up to `timeout` until a worker answers.
fn pid_eventually(srv: &Running, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match try_request_timeout(
            srv.port,
            &get_req(srv.port, "/pid"),
            Duration::from_secs(10),
        ) {
            Ok(r) if r.status == 200 => return pid_of(srv, &r),
            Ok(r) => format!("status {}\n{r}", r.status),
            Err(e) => format!("error: {e}"),
        };
        if Instant::now() >= deadline {
            srv.fail(format!("no worker answered GET /pid within {timeout:?} after the crash; last attempt: {last}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn crash_once(srv: &Running) {
    let t0 = Instant::now();
    let r = try_request_timeout(
        srv.port,
        &get_req(srv.port, "/exit"),
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| {
        srv.fail(format!(
            "GET /exit: expected a 502 response, got an error after {:?}: {e}",
            t0.elapsed()
        ))
    });
    let took = t0.elapsed();
    srv.assert_status(&r, 502, "GET /exit (worker calls os._exit(1) mid-request)");
    if took > Duration::from_secs(10) {
        srv.fail(format!("the 502 took {took:?} (limit 10 s)"));
    }
}

#[test]
fn worker_death_gives_502_and_a_new_worker() {
    let srv = Site::new()
        .app("echo_environ.py")
        .config(&app_config(
            "echo_environ:application",
            1,
            "queue_timeout = \"30s\"",
        ))
        .start();

    let first = pid_of(&srv, &srv.get("/pid"));
    crash_once(&srv);
    let second = pid_eventually(&srv, Duration::from_secs(10));
    assert_ne!(
        first, second,
        "the worker that called os._exit should have been replaced by a new process"
    );

    // And again: respawning is not a one-off.
    crash_once(&srv);
    let third = pid_eventually(&srv, Duration::from_secs(10));
    assert_ne!(second, third, "second crash: worker not replaced");

    // The master and the edge are still the same processes, and the
    // replacement workers are direct children of the master.
    let kids = srv.children();
    assert!(
        kids.contains(&(third as i32)),
        "new worker {third} should be a direct child of the master {} (children: {kids:?})",
        srv.pid()
    );
}

#[test]
fn worker_death_does_not_affect_queued_requests() {
    let srv = Site::new()
        .app("echo_environ.py")
        .config(&app_config(
            "echo_environ:application",
            1,
            "queue_timeout = \"30s\"",
        ))
        .start();
    let _ = pid_of(&srv, &srv.get("/pid"));

    // A request waits in the queue while the only worker crashes on /exit;
    // it must be served by the replacement worker.
    let port = srv.port;
    let crasher = thread::spawn(move || {
        try_request_timeout(port, &get_req(port, "/exit"), Duration::from_secs(20))
    });
    thread::sleep(Duration::from_millis(300));
    let queued = try_request_timeout(
        srv.port,
        &get_req(srv.port, "/pid"),
        Duration::from_secs(20),
    );
    let crashed = crasher.join().expect("crasher thread panicked");
    match crashed {
        Ok(r) => srv.assert_status(&r, 502, "GET /exit"),
        Err(e) => srv.fail(format!("GET /exit: expected 502, got error {e}")),
    }
    match queued {
        Ok(r) => srv.assert_status(&r, 200, "queued GET /pid behind a crashing request"),
        Err(e) => srv.fail(format!(
            "queued GET /pid behind a crashing request failed: {e}"
        )),
    }
}
