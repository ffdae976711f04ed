//! Several corral instances behind a real load balancer (HAProxy, Debian's
//! package), as issue "Deploy and scale out" asks: HTTP health checks on
//! `health_path`, PROXY protocol v2 to each instance, steady load through
//! HAProxy while every instance is rolled in turn — SIGTERM and restart
//! (with `drain_delay`), then `corral upgrade` — and every request counted.
//!
//! HAProxy retries only an empty response (a request that met a kept-alive
//! connection as the server closed it: the race every balancer handles),
//! not a refused connection: an instance must be out of the balancer's
//! rotation before its listeners close, which is `drain_delay`'s job.
mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const INSTANCES: usize = 3;

fn instance_site(port: Option<u16>) -> Site {
    let site = Site::new().app("echo_environ.py");
    let site = match port {
        Some(p) => site.on_port(p),
        None => site,
    };
    let config = app_config("echo_environ:application", 1, "").replacen(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n",
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nproxy_protocol = [\"127.0.0.1:{port}\"]\n\
         health_path = \"/healthz\"\ndrain_delay = \"1s\"\npid_file = \"corral.pid\"\n",
        1,
    );
    site.config(&config.replace("access = \"stdout\"", "access = \"off\""))
}

fn haproxy(dir: &std::path::Path, port: u16, backends: &[u16]) -> KillOnDrop {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server c{i} 127.0.0.1:{p}\n"))
        .collect();
    let cfg = format!(
        "global\n    maxconn 2000\n\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    \
         timeout server 30s\n    timeout check 1s\n    retries 3\n    option redispatch\n    \
         retry-on empty-response\n\n\
         frontend site\n    bind 127.0.0.1:{port}\n    default_backend corral\n\n\
         backend corral\n    balance roundrobin\n    option httpchk GET /healthz\n    \
         http-check expect status 200\n    \
         default-server inter 200ms fall 2 rise 2 check send-proxy-v2 check-send-proxy\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("write haproxy.cfg");
    let check = run_with_timeout(
        Command::new("haproxy").arg("-c").arg("-f").arg(&path),
        Duration::from_secs(20),
    );
    assert!(check.success(), "haproxy -c: {check}");
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy (scripts/deps.sh --test installs it)");
    KillOnDrop(child)
}

/// Waits until HAProxy has every instance up: each answers in turn.
fn wait_all_up(port: u16, n: usize) {
    let all_up = wait_until(Duration::from_secs(20), || {
        let pids: std::collections::BTreeSet<String> = (0..n * 3)
            .filter_map(|_| try_get(port, "/pid").ok())
            .filter(|r| r.status == 200)
            .map(|r| r.text())
            .collect();
        pids.len() == n
    });
    assert!(all_up, "HAProxy never had all {n} instances up");
}

#[test]
fn rolling_restarts_and_upgrades_behind_haproxy_lose_nothing() {
    let mut instances: Vec<Running> = (0..INSTANCES)
        .map(|_| instance_site(None).start())
        .collect();
    let ports: Vec<u16> = instances.iter().map(|r| r.port).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let front = free_port();
    let _lb = haproxy(dir.path(), front, &ports);
    wait_all_up(front, INSTANCES);

    // The app sees the real client from the PROXY header, not HAProxy.
    let out = curl(&[
        "-s",
        "--interface",
        "127.0.0.2",
        &format!("http://127.0.0.1:{front}/"),
    ]);
    let environ: serde_json::Value = serde_json::from_str(&out.stdout).expect("environ JSON");
    assert_eq!(environ["environ"]["REMOTE_ADDR"], "127.0.0.2", "{out}");

    let opts = LoadOpts {
        pause: Duration::from_millis(1),
        ..LoadOpts::default()
    };
    let load = Load::start(front, opts, |_, _| "/pid".to_string());
    // Roll 1: stop each instance (drain_delay takes it out of HAProxy
    // first) and start it again on the same port.
    for i in 0..INSTANCES {
        instances[i].signal("TERM");
        let exited = instances[i].wait_exit(Duration::from_secs(20));
        assert!(exited.is_some(), "instance {i} did not stop");
        instances[i] = instance_site(Some(ports[i])).start();
        wait_all_up(front, INSTANCES);
        assert!(load.wait_more(50, Duration::from_secs(10)));
    }
    // Roll 2: a binary upgrade of each instance in turn.
    let mut masters = Vec::new();
    for (i, srv) in instances.iter().enumerate() {
        let old = srv.pid_in_file();
        let config = srv.config_path().display().to_string();
        let out = corral(&["upgrade", "--config", &config], Duration::from_secs(200));
        assert!(out.success(), "upgrade of instance {i}: {out}");
        assert_ne!(srv.pid_in_file(), old);
        masters.push(srv.pid_in_file());
        if !load.wait_more(50, Duration::from_secs(10)) {
            let report = load.finish();
            panic!(
                "the load stalled after upgrading instance {i}: {}\n{}",
                report.summary(10),
                srv.stderr_tail()
            );
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let report = load.finish();
    eprintln!("{}", report.summary(0));
    assert!(report.failures().is_empty(), "{}", report.summary(10));
    assert!(report.total() > 1000, "{}", report.summary(0));
    for srv in &instances {
        let config = srv.config_path().display().to_string();
        let out = corral(&["stop", "--config", &config], Duration::from_secs(60));
        assert!(out.success(), "{out}");
    }
    assert_eq!(masters.len(), INSTANCES);
}
