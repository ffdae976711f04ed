//! Signals that change a running pool: TTIN / TTOU add and remove one
//! worker (requests keep working), USR1 reopens the access log after
//! rotation.
mod common;

use common::*;
use std::fs;
use std::time::Duration;

fn lifecycle_site(workers: u32) -> Site {
    Site::new().app("lifecycle_app.py").config(&app_config(
        "lifecycle_app:application",
        workers,
        "queue_timeout = \"30s\"",
    ))
}

/// Wait until the master has exactly the edge + `n` ready workers as
/// children (nothing booting or draining, no second edge from a reload).
#[track_caller]
fn expect_pool(srv: &Running, n: usize, what: &str) {
    let settled = wait_until(Duration::from_secs(15), || {
        srv.worker_pids().len() == n
            && srv.non_edge_children().len() == n
            && srv.edge_pids().len() == 1
            && srv.children().len() == n + 1
    });
    if !settled {
        srv.fail(format!(
            "{what}: expected the edge + {n} workers as children of the master; ready workers {:?}, non-edge children {:?}, edges {:?}, all children {:?}",
            srv.worker_pids(),
            srv.non_edge_children(),
            srv.edge_pids(),
            srv.children()
        ));
    }
}

#[test]
fn ttin_and_ttou_add_and_remove_workers_under_load() {
    let srv = lifecycle_site(2).start();
    expect_pool(&srv, 2, "at start");
    let before = srv.worker_pids();
    let load = Load::start(
        srv.port,
        LoadOpts {
            threads: 3,
            pause: Duration::from_millis(20),
            ..LoadOpts::default()
        },
        |_, _| "/sleep?s=0.02".to_string(),
    );
    load.wait_more(10, Duration::from_secs(10));

    srv.signal("TTIN");
    if !srv.wait_for_stderr("SIGTTIN: workers 2 -> 3", Duration::from_secs(5)) {
        srv.fail("no `SIGTTIN: workers 2 -> 3` line");
    }
    expect_pool(&srv, 3, "after SIGTTIN");
    let added: Vec<i32> = srv
        .worker_pids()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if added.len() != 1 {
        srv.fail(format!(
            "SIGTTIN should add exactly one worker: {before:?} -> {:?}",
            srv.worker_pids()
        ));
    }
    load.wait_more(10, Duration::from_secs(10));

    srv.signal("TTOU");
    if !srv.wait_for_stderr("SIGTTOU: workers 3 -> 2", Duration::from_secs(5)) {
        srv.fail("no `SIGTTOU: workers 3 -> 2` line");
    }
    // The newest worker goes first.
    if !srv.wait_for_stderr(
        &format!("retiring worker {}: 2 wanted", added[0]),
        Duration::from_secs(5),
    ) {
        srv.fail(format!(
            "expected `retiring worker {}: 2 wanted` (the newest worker)",
            added[0]
        ));
    }
    expect_pool(&srv, 2, "after the first SIGTTOU");
    load.wait_more(10, Duration::from_secs(10));

    srv.signal("TTOU");
    if !srv.wait_for_stderr("SIGTTOU: workers 2 -> 1", Duration::from_secs(5)) {
        srv.fail("no `SIGTTOU: workers 2 -> 1` line");
    }
    if !srv.wait_for_stderr(": 1 wanted", Duration::from_secs(5)) {
        srv.fail("expected `retiring worker <pid>: 1 wanted`");
    }
    expect_pool(&srv, 1, "after the second SIGTTOU");
    load.wait_more(10, Duration::from_secs(10));

    // Never below one worker.
    srv.signal("TTOU");
    if !srv.wait_for_stderr(
        "SIGTTOU ignored: already down to one worker",
        Duration::from_secs(5),
    ) {
        srv.fail(
            "a third SIGTTOU should be ignored with `SIGTTOU ignored: already down to one worker`",
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    expect_pool(&srv, 1, "after a SIGTTOU at one worker");
    load.wait_more(10, Duration::from_secs(10));

    let report = load.finish();
    eprintln!("load while scaling: {}", report.summary(30));
    let failures = report.failures();
    if !failures.is_empty() {
        srv.fail(format!(
            "{} requests failed while scaling with TTIN/TTOU (expected none):\n{}",
            failures.len(),
            report.summary(40)
        ));
    }
    let log = srv.stderr();
    if count_lines(&log, "died") > 0 || count_lines(&log, "was killed") > 0 {
        srv.fail("a worker died while scaling; retired workers should stop cleanly");
    }
}

#[test]
fn usr1_reopens_the_access_log_after_rotation() {
    let cfg = app_config("lifecycle_app:application", 1, "")
        .replace("access = \"stdout\"", "access = \"access.log\"");
    let srv = Site::new().app("lifecycle_app.py").config(&cfg).start();
    let log = srv.path().join("access.log");
    let rotated = srv.path().join("access.log.1");
    let read = |p: &std::path::Path| fs::read_to_string(p).unwrap_or_default();

    for i in 0..3 {
        srv.assert_status(
            &srv.get(&format!("/fast?marker=one-{i}")),
            200,
            "GET before rotation",
        );
    }
    if !wait_until(Duration::from_secs(5), || {
        read(&log).contains("marker=one-2")
    }) {
        srv.fail(format!(
            "access.log does not show the first requests:\n{}",
            read(&log)
        ));
    }

    fs::rename(&log, &rotated).expect("rotate access.log");
    // Until USR1 the edge keeps writing to the file it has open (now access.log.1).
    srv.assert_status(&srv.get("/fast?marker=two"), 200, "GET after the rename");
    if !wait_until(Duration::from_secs(5), || {
        read(&rotated).contains("marker=two")
    }) {
        srv.fail(format!(
            "before USR1 the line should go to the renamed file:\naccess.log.1:\n{}\naccess.log:\n{}",
            read(&rotated),
            read(&log)
        ));
    }

    srv.signal("USR1");
    if !srv.wait_for_stderr("SIGUSR1: reopening log files", Duration::from_secs(5)) {
        srv.fail("no `SIGUSR1: reopening log files` line");
    }
    let mut i = 0;
    let reopened = wait_until(Duration::from_secs(10), || {
        srv.assert_status(
            &srv.get(&format!("/fast?marker=three-{i}")),
            200,
            "GET after USR1",
        );
        i += 1;
        read(&log).contains("marker=three-")
    });
    if !reopened {
        srv.fail(format!(
            "after USR1 no new access.log appeared with the new requests:\naccess.log.1:\n{}",
            read(&rotated)
        ));
    }
    srv.assert_status(&srv.get("/fast?marker=four"), 200, "GET after the reopen");
    if !wait_until(Duration::from_secs(5), || {
        read(&log).contains("marker=four")
    }) {
        srv.fail(format!(
            "the request after the reopen is not in the new access.log:\n{}",
            read(&log)
        ));
    }
    let old = read(&rotated);
    let new = read(&log);
    eprintln!("---- access.log.1 ----\n{old}---- access.log ----\n{new}");
    assert!(
        old.contains("marker=one-0") && old.contains("marker=two") && !old.contains("marker=four"),
        "the rotated file should hold the lines from before the reopen only:\n{old}"
    );
    assert!(
        !new.contains("marker=one-") && !new.contains("marker=two"),
        "the new access.log should start after the reopen:\n{new}"
    );
    assert!(
        new.lines()
            .all(|l| l.contains("\"GET /fast?marker=") && l.contains(" 200 ")),
        "unexpected lines in the new access.log:\n{new}"
    );
    assert!(
        srv.stdout().trim().is_empty(),
        "with access = \"access.log\" nothing should go to stdout:\n{}",
        srv.stdout()
    );
}

#[test]
fn sighup_rereads_the_config_file_and_refuses_a_broken_one() {
    let srv = lifecycle_site(2).start();
    expect_pool(&srv, 2, "at start");
    let cfg_path = srv.config_path();
    let text = fs::read_to_string(&cfg_path).expect("read site.toml");
    fs::write(&cfg_path, text.replace("workers = 2", "workers = 3")).expect("write site.toml");
    srv.signal("HUP");
    if !srv.wait_for_stderr("SIGHUP: reloading", Duration::from_secs(5)) {
        srv.fail("no `SIGHUP: reloading` line");
    }
    expect_pool(&srv, 3, "after HUP with workers = 3 in the file");

    // A broken file: the reload is refused, the running pool stays.
    fs::write(&cfg_path, text.replace("workers = 2", "workers = \"many\""))
        .expect("write site.toml");
    srv.signal("HUP");
    if !srv.wait_for_stderr(
        "reload refused, keeping the running config",
        Duration::from_secs(5),
    ) {
        srv.fail("a HUP with an invalid config should log `reload refused, keeping the running config: ...`");
    }
    std::thread::sleep(Duration::from_millis(500));
    expect_pool(&srv, 3, "after HUP with a broken file");
    for i in 0..6 {
        srv.assert_status(
            &srv.get(&format!("/fast?after-refused-reload={i}")),
            200,
            "GET after a refused reload",
        );
    }
}
