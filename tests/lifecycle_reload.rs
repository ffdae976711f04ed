//! SIGHUP reloads under load: workers are replaced one at a time (each new
//! one ready before an old one drains), the edge is handed over to a new
//! process on the same listening sockets, new code is imported, and not a
//! single request fails. Plus `corral reload` / `corral stop` through the
//! pid file.
mod common;

use common::*;
use std::fs;
use std::time::{Duration, Instant};

const RELOADS: u32 = 10;

fn version_site(server_extra: &str) -> Site {
    let mut cfg = app_config(
        "lifecycle_version:application",
        2,
        "queue_timeout = \"30s\"",
    );
    if !server_extra.is_empty() {
        cfg = cfg.replacen("[server]\n", &format!("[server]\n{server_extra}\n"), 1);
    }
    Site::new()
        .app("lifecycle_version.py")
        .file("version.txt", "v0\n")
        .config(&cfg)
}

/// The version a response body ("<version> <pid>") shows.
fn version_of(body: &str) -> &str {
    body.split_whitespace().next().unwrap_or("")
}

/// `n` fresh-connection GETs in a row all show `want` (any error: false).
fn probes_show(port: u16, want: &str, n: usize) -> bool {
    (0..n).all(
        |_| match try_request_timeout(port, &get_req(port, "/"), Duration::from_secs(10)) {
            Ok(r) => r.status == 200 && version_of(&r.text()) == want,
            Err(_) => false,
        },
    )
}

/// Wait until fresh requests and every load thread's latest answer show `want`.
fn wait_for_version(srv: &Running, load: Option<&Load>, want: &str, timeout: Duration) -> bool {
    wait_until(timeout, || {
        let load_ok = match load {
            None => true,
            Some(l) => {
                // Only answers that arrive from now on count.
                l.wait_more(4, Duration::from_secs(5));
                l.latest_bodies()
                    .iter()
                    .all(|b| b.as_deref().map(version_of) == Some(want))
            }
        };
        load_ok && probes_show(srv.port, want, 4)
    })
}

#[test]
fn ten_sighup_reloads_under_load_fail_no_request() {
    let srv = version_site("").start();
    let port = srv.port;
    let first_workers = srv.worker_pids();
    let first_edges = srv.edge_pids();
    assert_eq!(
        first_workers.len(),
        2,
        "2 ready workers at start: {first_workers:?}\n{}",
        srv.logs()
    );
    assert_eq!(
        first_edges.len(),
        1,
        "1 edge at start: {first_edges:?}\n{}",
        srv.logs()
    );
    if !probes_show(port, "v0", 2) {
        srv.fail("before any reload the app should answer v0");
    }

    // Threads 0 and 2 keep connections alive, 1 and 3 open one per request.
    let load = Load::start(
        port,
        LoadOpts {
            threads: 4,
            pause: Duration::from_millis(5),
            ..LoadOpts::default()
        },
        |_, _| "/".to_string(),
    );
    if !load.wait_more(20, Duration::from_secs(10)) {
        srv.fail("the load clients made no progress before the first reload");
    }

    // Reloads 1-5 wait for the whole rolling restart (new code in every
    // worker and the edge handed over); 6-10 follow each other as soon as the
    // workers show the new code, while earlier edge hand-overs are still
    // under way.
    let mut timings = Vec::new();
    for k in 1..=RELOADS {
        let want = format!("v{k}");
        let full = k <= RELOADS / 2;
        fs::write(srv.path().join("version.txt"), format!("{want}\n")).expect("write version.txt");
        let t = Instant::now();
        srv.signal("HUP");
        let mut converged = wait_for_version(&srv, Some(&load), &want, Duration::from_secs(15));
        if full {
            converged &= srv.wait_for_stderr_count(
                "draining the previous edge",
                k as usize,
                Duration::from_secs(15),
            );
        }
        timings.push((want.clone(), converged, t.elapsed()));
        eprintln!(
            "reload {k} ({}): {} after {:?} ({} requests so far)",
            if full {
                "waiting for the edge hand-over"
            } else {
                "rapid"
            },
            if converged { "done" } else { "NOT converged" },
            t.elapsed(),
            load.completed()
        );
    }
    // Let the last edge hand-over finish under load too.
    let settled = srv.wait_for_stderr_count(
        "draining the previous edge",
        RELOADS as usize,
        Duration::from_secs(15),
    ) && wait_until(Duration::from_secs(15), || srv.edge_pids().len() == 1);
    load.wait_more(50, Duration::from_secs(10));
    let report = load.finish();
    eprintln!("load during {RELOADS} reloads: {}", report.summary(40));

    let failures = report.failures();
    if !failures.is_empty() {
        srv.fail(format!(
            "{} of {} requests failed during {RELOADS} SIGHUP reloads (expected none):\n{}\nreload timings: {timings:?}",
            failures.len(),
            report.total(),
            report.summary(60)
        ));
    }
    if report.total() < 200 {
        srv.fail(format!(
            "the load was too thin to mean anything ({} requests)",
            report.total()
        ));
    }

    // The final version is served by every worker, on every kind of connection.
    let last = format!("v{RELOADS}");
    if !wait_for_version(&srv, None, &last, Duration::from_secs(15)) {
        srv.fail(format!(
            "after the last reload, fresh requests do not all show {last}"
        ));
    }
    let mut c = srv.connect();
    for i in 0..10 {
        let r = c
            .get("/")
            .unwrap_or_else(|e| srv.fail(format!("keep-alive GET #{i} after the reloads: {e}")));
        srv.assert_status(&r, 200, "GET / after the reloads");
        if version_of(&r.text()) != last {
            srv.fail(format!(
                "keep-alive GET #{i} after the reloads shows {:?}, expected {last}",
                r.text()
            ));
        }
    }
    let unconverged: Vec<_> = timings.iter().filter(|t| !t.1).collect();
    if !unconverged.is_empty() {
        srv.fail(format!(
            "some reloads did not reach every worker within 15 s: {unconverged:?}"
        ));
    }

    // Everything was replaced: workers and the edge, and nothing piled up.
    if !settled {
        srv.fail(format!(
            "after {RELOADS} reloads: expected {RELOADS} edge hand-overs and one edge left; edges now {:?}",
            srv.edge_pids()
        ));
    }
    if !srv.wait_worker_count(2, Duration::from_secs(10)) {
        srv.fail(format!(
            "after the reloads: expected 2 workers, have ready {:?} / non-edge children {:?}",
            srv.worker_pids(),
            srv.non_edge_children()
        ));
    }
    let now_workers = srv.worker_pids();
    let now_edges = srv.edge_pids();
    if now_workers.iter().any(|p| first_workers.contains(p)) || now_edges == first_edges {
        srv.fail(format!(
            "workers {first_workers:?} -> {now_workers:?}, edge {first_edges:?} -> {now_edges:?}: everything should have been replaced"
        ));
    }
    let log = srv.stderr();
    let sighups = count_lines(&log, "SIGHUP: reloading");
    let recycled = count_lines(&log, "(reload): its replacement is ready");
    eprintln!("log: {sighups} SIGHUP lines, {recycled} reload recycles, edges now {now_edges:?}, workers {now_workers:?}");
    assert_eq!(
        sighups,
        RELOADS as usize,
        "one `SIGHUP: reloading` line per signal\n{}",
        srv.logs()
    );
    assert!(
        recycled >= 2 * RELOADS as usize,
        "each reload replaces both workers: expected >= {} `recycling worker ... (reload)` lines, found {recycled}\n{}",
        2 * RELOADS,
        srv.logs()
    );
}

#[test]
fn reload_and_stop_commands_use_the_pid_file() {
    let mut srv = version_site("pid_file = \"corral.pid\"").start();
    let cfg = srv.config_path().display().to_string();
    let pid_path = srv.path().join("corral.pid");
    let pid_text = fs::read_to_string(&pid_path).unwrap_or_else(|e| {
        srv.fail(format!(
            "pid file {} not there while running: {e}",
            pid_path.display()
        ))
    });
    assert_eq!(
        pid_text.trim(),
        srv.pid().to_string(),
        "the pid file should hold the master's pid"
    );

    // corral reload --config
    fs::write(srv.path().join("version.txt"), "v1\n").expect("write version.txt");
    let out = corral(&["reload", "--config", &cfg], CMD_TIMEOUT);
    if !out.success() {
        srv.fail(format!("corral reload --config failed:\n{out}"));
    }
    let want = format!("sent SIGHUP to corral (pid {})", srv.pid());
    if !out.stdout.contains(&want) {
        srv.fail(format!("corral reload should print {want:?}:\n{out}"));
    }
    if !wait_for_version(&srv, None, "v1", Duration::from_secs(15)) {
        srv.fail("after `corral reload --config`, the workers do not show v1");
    }

    // corral reload --pid-file
    fs::write(srv.path().join("version.txt"), "v2\n").expect("write version.txt");
    let pid_arg = pid_path.display().to_string();
    let out = corral(&["reload", "--pid-file", &pid_arg], CMD_TIMEOUT);
    if !out.success() || !out.stdout.contains(&want) {
        srv.fail(format!(
            "corral reload --pid-file should succeed and print {want:?}:\n{out}"
        ));
    }
    if !wait_for_version(&srv, None, "v2", Duration::from_secs(15)) {
        srv.fail("after `corral reload --pid-file`, the workers do not show v2");
    }
    srv.children();

    // corral stop --config: graceful, waits until the master has exited.
    let t = Instant::now();
    let out = srv.run_corral_reaping(&["stop", "--config", &cfg], Duration::from_secs(30));
    if !out.success() {
        srv.fail(format!("corral stop --config failed:\n{out}"));
    }
    if !out.stdout.contains("it has stopped") {
        srv.fail(format!("corral stop should say `it has stopped`:\n{out}"));
    }
    eprintln!("corral stop took {:?}", t.elapsed());
    match srv.try_status() {
        None => srv.fail("`corral stop` returned but the master is still running"),
        Some(st) if st.code() != Some(0) => srv.fail(format!(
            "after `corral stop` the master exited with {st}, expected 0"
        )),
        Some(_) => {}
    }
    if pid_path.exists() {
        srv.fail(format!(
            "pid file {} still there after stop",
            pid_path.display()
        ));
    }
    let survivors = srv.wait_recorded_gone(Duration::from_secs(3));
    if !survivors.is_empty() {
        srv.fail(format!(
            "children {survivors:?} still alive after `corral stop`"
        ));
    }
    assert!(
        !port_open(srv.port),
        "port {} still open after `corral stop`",
        srv.port
    );

    // Nothing running any more: the commands say so and fail.
    let out = corral(&["reload", "--config", &cfg], CMD_TIMEOUT);
    assert!(
        !out.success() && out.stderr.contains("pid file"),
        "`corral reload` with no corral running should fail and mention the pid file:\n{out}"
    );
}

/// `corral stop` waits until the master has exited. A master that has
/// exited but whose parent has not reaped it yet (a zombie) has stopped too:
/// here the test process is that parent and does not reap during the stop.
#[test]
fn stop_command_does_not_wait_for_the_parent_to_reap_the_master() {
    let cfg = app_config("lifecycle_version:application", 1, "")
        .replacen("[server]\n", "[server]\npid_file = \"corral.pid\"\n", 1)
        .replace("graceful_timeout = \"10s\"", "graceful_timeout = \"1s\"");
    let mut srv = Site::new()
        .app("lifecycle_version.py")
        .file("version.txt", "v0\n")
        .config(&cfg)
        .start();
    let cfg_arg = srv.config_path().display().to_string();
    srv.children();
    // No reaping while `corral stop` runs (as with any parent busy waiting
    // for the stop command, e.g. Python's subprocess.run).
    let out = corral(&["stop", "--config", &cfg_arg], Duration::from_secs(30));
    let exited = srv.wait_exit(Duration::from_secs(5));
    eprintln!("corral stop: {out}");
    if exited.is_none() {
        srv.fail("the master did not exit after `corral stop`");
    }
    if !out.success() || out.elapsed > Duration::from_secs(5) {
        srv.fail(format!(
            "`corral stop` should report success as soon as the master has exited (within ~1 s here), even before its parent reaps it; it took {:?}:\n{out}",
            out.elapsed
        ));
    }
}

/// An idle pooled HTTP/2 connection (httpx, as a Python service calling
/// another holds one) across a reload. The draining edge sent GOAWAY, then
/// a PING to time the second GOAWAY; python-h2 takes the connection as
/// closed at the first GOAWAY and refuses the PING, so httpx raised
/// LocalProtocolError ("RECV_PING in state CLOSED") every time (found by
/// helper-21). A connection with no stream open now gets one GOAWAY and
/// closes, as nginx does. httpx then usually opens a new connection, but
/// may still report "Server disconnected" once (seen in 1 of ~6 runs, as
/// it would behind nginx); the request after always succeeds.
#[test]
fn an_idle_pooled_h2_connection_survives_a_reload() {
    let srv = version_site("h2c = true").start();
    let script = r#"
import httpx, os, signal, sys, time
url, master = sys.argv[1], int(sys.argv[2])
with httpx.Client(http1=False, http2=True, timeout=10) as c:
    r = c.get(url)
    print(r.http_version, r.status_code)
    os.kill(master, signal.SIGHUP)
    time.sleep(2.5)
    for _ in range(2):
        try:
            print(c.get(url).status_code)
        except Exception as e:
            print("error", type(e).__name__, e)
"#;
    let out = run_with_timeout(
        std::process::Command::new(venv().join("bin/python"))
            .args(["-c", script])
            .arg(format!("http://127.0.0.1:{}/", srv.port))
            .arg(srv.pid().to_string()),
        Duration::from_secs(60),
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.len() == 3 && lines[0] == "HTTP/2 200" && lines[2] == "200",
        "{out}\n{}",
        srv.stderr_tail()
    );
    assert!(
        lines[1] == "200" || lines[1].contains("Server disconnected"),
        "{out}\n{}",
        srv.stderr_tail()
    );
}

/// Once `corral reload` says done, new requests get the new code (the
/// canary answers while the old workers are replaced one by one), so a
/// deploy's smoke test run right after it checks the new code. A guard:
/// helper-22 saw old code answer for ~0.1 s after the command returned,
/// which this (3 reloads, 10 requests each) does not reproduce.
#[test]
fn requests_after_reload_returns_get_the_new_code() {
    let mut srv = version_site("pid_file = \"corral.pid\"").start();
    let pid_arg = srv.path().join("corral.pid").display().to_string();
    assert!(srv.wait_worker_count(2, Duration::from_secs(10)));
    for round in 1..=3 {
        let want = format!("v{round}");
        fs::write(srv.path().join("version.txt"), format!("{want}\n")).unwrap();
        let out = srv.run_corral_reaping(&["reload", "--pid-file", &pid_arg], CMD_TIMEOUT);
        assert!(out.success(), "{out}");
        let seen: Vec<String> = (0..10)
            .map(|_| version_of(&srv.get("/").text()).to_string())
            .collect();
        assert!(
            seen.iter().all(|v| *v == want),
            "after reload {round}: {seen:?}"
        );
        assert!(wait_for_version(&srv, None, &want, Duration::from_secs(15)));
    }
}
