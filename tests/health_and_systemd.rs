//! The hooks a load balancer and systemd use, as they use them:
//!
//! * `[server] health_path`: 200 with the facts as JSON while workers are
//!   ready (curl), 503 while the app still boots, GET/HEAD only;
//! * `[server] drain_delay`: after SIGTERM the health path answers 503 at
//!   once while every other request is still served, then the listeners
//!   close and corral exits; every request sent is counted;
//! * `Type=notify`: READY=1 only once the site answers, STATUS lines,
//!   RELOADING=1 + MONOTONIC_USEC then READY=1 on SIGHUP, STOPPING=1,
//!   WATCHDOG=1 pings when WATCHDOG_USEC is set (a datagram socket stands
//!   in for systemd's NOTIFY_SOCKET);
//! * socket activation by systemd's own `systemd-socket-activate`: corral
//!   takes the listening socket it is passed, and the connection that
//!   started it is served.
mod common;

use common::*;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn health_config(extra_server: &str) -> String {
    app_config("hello:application", 2, "").replacen(
        "[server]\n",
        &format!("[server]\nhealth_path = \"/healthz\"\n{extra_server}\n"),
        1,
    )
}

/// `curl -s -w '\n%{http_code}'`: the body and the status.
fn curl_health(port: u16, extra: &[&str]) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let mut args = vec!["-s", "--max-time", "10", "-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = curl(&args);
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", ""));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_health_path_says_ready_only_when_workers_are() {
    // The app takes 3 s to import: the edge listens, the workers boot.
    let site = Site::new()
        .app("hello.py")
        .file(
            "slow_boot.py",
            "import time\ntime.sleep(3)\nfrom hello import application\n",
        )
        .config(&app_config("slow_boot:application", 2, "").replacen(
            "[server]\n",
            "[server]\nhealth_path = \"/healthz\"\n",
            1,
        ));
    let mut srv = site.spawn();
    assert!(
        wait_until(Duration::from_secs(10), || try_get(srv.port, "/healthz")
            .is_ok()),
        "the edge never answered: {}",
        srv.stderr_tail()
    );
    let (status, body) = curl_health(srv.port, &[]);
    assert_eq!(status, 503, "{body}");
    let facts: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(facts["status"], "no workers ready", "{facts}");
    assert_eq!(facts["workers_ready"], 0, "{facts}");
    srv.wait_ready(Duration::from_secs(30));
    let (status, body) = curl_health(srv.port, &[]);
    assert_eq!(status, 200, "{body}");
    let facts: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(facts["status"], "ready", "{facts}");
    assert_eq!(facts["workers_ready"], 2, "{facts}");
    assert_eq!(facts["workers_wanted"], 2, "{facts}");
    // A probe's query string is fine; HEAD has no body; POST is refused;
    // the app never sees any of them.
    assert_eq!(curl_health(srv.port, &["-G", "-d", "probe=lb1"]).0, 200);
    let head = srv.head("/healthz");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("cache-control"), Some("no-store"));
    let post = srv.post("/healthz", "text/plain", b"x");
    assert_eq!(post.status, 405, "{}", post.text());
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(srv.get("/").text(), "Hello, World!");
}

/// What the load thread saw: answers by status, and failures by kind.
#[derive(Default, Debug)]
struct Tally {
    ok_during_delay: u64,
    refused_after: u64,
    other: Vec<String>,
}

#[test]
fn drain_delay_turns_health_503_first_and_keeps_serving() {
    let mut srv = Site::new()
        .app("hello.py")
        .config(&health_config("drain_delay = \"2s\""))
        .start();
    assert_eq!(curl_health(srv.port, &[]).0, 200);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let port = srv.port;
    let sigterm_at = Instant::now() + Duration::from_millis(300);
    let load = {
        let tally = tally.clone();
        std::thread::spawn(move || {
            // Fresh connections, as a load balancer that has not yet noticed.
            let end = sigterm_at + Duration::from_secs(5);
            while Instant::now() < end {
                let r = try_get(port, "/");
                let mut t = tally.lock().expect("tally");
                let into_delay = Instant::now().saturating_duration_since(sigterm_at);
                match r {
                    Ok(resp) if resp.status == 200 => t.ok_during_delay += 1,
                    // After the delay the listeners close: refused, or
                    // reset if it was in the backlog as they closed (never
                    // read, so safe for a balancer to retry).
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionRefused
                                | std::io::ErrorKind::ConnectionReset
                        ) =>
                    {
                        if into_delay < Duration::from_millis(1900) {
                            t.other.push(format!("{e} {into_delay:?} after SIGTERM"));
                        }
                        t.refused_after += 1;
                        drop(t);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(resp) => t.other.push(format!("status {}", resp.status)),
                    Err(e) => t.other.push(format!("{e} at {into_delay:?}")),
                }
            }
        })
    };
    std::thread::sleep(sigterm_at.saturating_duration_since(Instant::now()));
    srv.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = curl_health(srv.port, &[]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"status\":\"draining\""), "{body}");
    // Still served during the delay, on new connections too.
    assert_eq!(srv.get("/").text(), "Hello, World!");
    let exited = srv.wait_exit(Duration::from_secs(15));
    load.join().expect("load thread");
    let t = tally.lock().expect("tally");
    assert!(
        exited.is_some(),
        "corral did not stop: {}",
        srv.stderr_tail()
    );
    assert!(t.other.is_empty(), "{t:?}\n{}", srv.stderr_tail());
    assert!(t.ok_during_delay > 20, "{t:?}");
    assert!(t.refused_after > 0, "listeners never closed: {t:?}");
    let log = srv.stderr();
    assert!(log.contains("drain_delay"), "{log}");
}

#[test]
fn systemd_hears_ready_reloading_stopping_and_watchdog_pings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, notes) = Notes::listen(dir.path());
    let mut srv = Site::new()
        .app("hello.py")
        .env("NOTIFY_SOCKET", &socket)
        .env("WATCHDOG_USEC", "400000")
        .config(&app_config("hello:application", 2, ""))
        .spawn();
    let (i, ready) = notes
        .wait_for(0, "READY=1")
        .unwrap_or_else(|| srv.fail("no READY=1"));
    // READY means serving: the first request right after it is answered.
    assert_eq!(srv.get("/").text(), "Hello, World!");
    assert!(
        ready.contains("STATUS=serving: 2 of 2 workers ready, 0 queued"),
        "{ready}"
    );
    // Pings at half of WATCHDOG_USEC.
    std::thread::sleep(Duration::from_millis(1000));
    let pings = notes
        .all()
        .iter()
        .filter(|m| m.trim() == "WATCHDOG=1")
        .count();
    assert!((3..=8).contains(&pings), "{pings} watchdog pings in ~1 s");
    srv.signal("HUP");
    let (j, reloading) = notes
        .wait_for(i + 1, "RELOADING=1")
        .unwrap_or_else(|| srv.fail("no RELOADING=1"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notes
        .wait_for(j + 1, "READY=1")
        .unwrap_or_else(|| srv.fail("no READY=1 after reload"));
    assert_eq!(srv.get("/").text(), "Hello, World!");
    srv.signal("TERM");
    let (_, stopping) = notes
        .wait_for(j + 1, "STOPPING=1")
        .unwrap_or_else(|| srv.fail("no STOPPING=1"));
    assert!(stopping.contains("STATUS=stopping"), "{stopping}");
    assert!(srv.wait_exit(Duration::from_secs(15)).is_some());
}

#[test]
fn socket_activation_takes_the_socket_systemd_passes() {
    let site = Site::new()
        .app("hello.py")
        .config(&app_config("hello:application", 1, ""));
    let port = site.port();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--fdname=web");
    // It hands the program only the variables named with -E.
    for var in ["PATH", "HOME", "LANG"] {
        cmd.arg("-E").arg(var);
    }
    cmd.arg(CORRAL)
        .arg("serve")
        .arg("--config")
        .arg(site.config_path());
    let srv = site.spawn_with(cmd);
    assert!(
        wait_until(Duration::from_secs(10), || port_open(port)),
        "systemd-socket-activate is not listening"
    );
    // This connection starts corral, which must serve it from the socket
    // it was passed (binding the address itself would fail: it is taken).
    let out = curl(&[
        "-s",
        "--max-time",
        "30",
        &format!("http://127.0.0.1:{port}/"),
    ]);
    assert_eq!(out.stdout, "Hello, World!", "{out}\n{}", srv.stderr_tail());
    assert!(
        srv.stderr()
            .contains("using the listening socket passed to this process"),
        "{}",
        srv.stderr_tail()
    );
    assert_eq!(srv.get("/").text(), "Hello, World!");
}

/// contrib/'s unit files are valid for this host's systemd (a typo in a
/// directive would be ignored with a warning at `daemon-reload`).
#[test]
fn the_contrib_unit_files_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let contrib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let mut units = Vec::new();
    for name in ["corral.service", "corral.socket"] {
        let text = std::fs::read_to_string(contrib.join(name)).expect("unit file");
        let path = dir.path().join(name);
        std::fs::write(&path, text.replace("/usr/local/bin/corral", CORRAL)).expect("write");
        units.push(path);
    }
    let out = run_with_timeout(
        Command::new("systemd-analyze").arg("verify").args(&units),
        Duration::from_secs(60),
    );
    assert!(out.success() && out.stderr.trim().is_empty(), "{out}");
}

/// Requests waiting for the one worker show in the health JSON at once and
/// in systemd's STATUS within about a second.
#[test]
fn the_queue_shows_in_health_and_in_systemd_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, notes) = Notes::listen(dir.path());
    let srv = Site::new()
        .app("lifecycle_app.py")
        .env("NOTIFY_SOCKET", &socket)
        .config(&app_config("lifecycle_app:application", 1, "").replacen(
            "[server]\n",
            "[server]\nhealth_path = \"/healthz\"\n",
            1,
        ))
        .start();
    let port = srv.port;
    let sleepers: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || try_get(port, "/sleep?s=3")))
        .collect();
    let queued_two = wait_until(Duration::from_secs(2), || {
        curl_health(port, &[]).1.contains("\"queued\":2")
    });
    assert!(queued_two, "{}", curl_health(port, &[]).1);
    notes
        .wait_for(0, "STATUS=serving: 1 of 1 workers ready, 2 queued")
        .unwrap_or_else(|| panic!("{:?}", notes.all()));
    for s in sleepers {
        let r = s.join().expect("sleeper").expect("answered");
        assert_eq!(r.status, 200);
    }
    notes
        .wait_for(0, "STATUS=serving: 1 of 1 workers ready, 0 queued")
        .unwrap_or_else(|| panic!("{:?}", notes.all()));
}
