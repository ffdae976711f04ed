//! Binary upgrades as an operator does them (`corral upgrade`, SIGUSR2):
//! the binary at corral's path is replaced (as `cargo install` or a
//! package upgrade does: a new file renamed over the old), and the running
//! corral hands its listening sockets to the new one, waits until it
//! serves, then drains. Under load, every request is counted; a broken new
//! binary leaves the old one serving; under systemd the new master is
//! named the service's main process.
mod common;

use common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The site runs from its own copy of corral, which the tests replace.
fn upgradable_site(extra_env: &[(&str, &str)]) -> (Running, std::path::PathBuf) {
    let mut site =
        Site::new()
            .app("hello.py")
            .config(&app_config("hello:application", 2, "").replacen(
                "[server]\n",
                "[server]\npid_file = \"corral.pid\"\nhealth_path = \"/healthz\"\n",
                1,
            ));
    for (k, v) in extra_env {
        site = site.env(k, v);
    }
    let bin = site.path().join("bin/corral");
    std::fs::create_dir_all(site.path().join("bin")).expect("bin dir");
    std::fs::copy(CORRAL, &bin).expect("copy corral");
    let mut cmd = Command::new(&bin);
    cmd.arg("serve").arg("--config").arg(site.config_path());
    let mut srv = site.spawn_with(cmd);
    srv.wait_ready(Duration::from_secs(30));
    (srv, bin)
}

/// Puts `content` at `bin` as a package manager does: a new file, renamed
/// over the old one (the running binary's inode is untouched).
fn replace_binary(bin: &std::path::Path, content: &[u8]) {
    let tmp = bin.with_extension("new");
    std::fs::write(&tmp, content).expect("write new binary");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, bin).expect("rename over the old binary");
}

fn corral_cli(args: &[&str], config: &std::path::Path) -> CmdOutput {
    run_with_timeout(
        Command::new(CORRAL).args(args).arg("--config").arg(config),
        Duration::from_secs(200),
    )
}

fn master_pid(srv: &Running) -> i32 {
    let text = std::fs::read_to_string(srv.path().join("corral.pid")).expect("pid file");
    text.trim().parse().expect("a pid")
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Clients that keep asking until told to stop: fresh connections and
/// keep-alive ones (reconnecting when a response says `Connection: close`).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..4)
            .map(|i| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let keep_alive = i % 2 == 0;
                    let mut conn: Option<Conn> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let result = if keep_alive {
                            let c = match conn.as_mut() {
                                Some(c) => c,
                                None => conn.insert(Conn::connect(port)),
                            };
                            c.get("/")
                        } else {
                            try_get(port, "/")
                        };
                        match result {
                            Ok(r) if r.status == 200 && r.body == b"Hello, World!" => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if r.closes() {
                                    conn = None;
                                }
                            }
                            Ok(r) => failures
                                .lock()
                                .expect("tally")
                                .push(format!("status {}", r.status)),
                            Err(e) => {
                                failures.lock().expect("tally").push(e.to_string());
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let failures = self.failures.lock().expect("tally").clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn an_upgrade_under_load_drops_nothing_and_tells_systemd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (notify_path, notes) = Notes::listen(dir.path());
    let (srv, bin) = upgradable_site(&[("NOTIFY_SOCKET", &notify_path)]);
    let old = master_pid(&srv);
    let load = Load::start(srv.port);
    std::thread::sleep(Duration::from_millis(500));
    replace_binary(&bin, &std::fs::read(CORRAL).expect("read corral"));
    let exe = std::fs::read_link(format!("/proc/{old}/exe")).expect("old exe");
    assert!(exe.display().to_string().ends_with("(deleted)"), "{exe:?}");
    let out = corral_cli(&["upgrade"], &srv.config_path());
    assert!(out.success(), "{out}\n{}", srv.stderr_tail());
    assert!(out.stdout.contains("upgraded: corral (pid"), "{out}");
    let new = master_pid(&srv);
    assert_ne!(new, old);
    // The new master runs the file now at the path.
    let exe = std::fs::read_link(format!("/proc/{new}/exe")).expect("new exe");
    assert_eq!(exe, bin, "{exe:?}");
    assert!(
        wait_until(Duration::from_secs(20), || !alive(old)),
        "the old master did not exit: {}",
        srv.stderr_tail()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {failures:?}",
        failures.len(),
        ok + failures.len() as u64
    );
    assert!(ok > 200, "only {ok} requests");
    // systemd heard the hand-over from the old master.
    let (handed, _) = notes
        .wait_for(0, &format!("MAINPID={new}"))
        .unwrap_or_else(|| panic!("no MAINPID={new}: {:?}", notes.all()));
    // The new master is the one that stops, through the same pid file, and
    // tells systemd (the old one says nothing after handing over).
    let out = corral_cli(&["stop"], &srv.config_path());
    assert!(out.success(), "{out}");
    assert!(!alive(new));
    let after: Vec<String> = notes.all().split_off(handed + 1);
    let stops = after.iter().filter(|m| m.contains("STOPPING=1")).count();
    assert_eq!(stops, 1, "{after:?}");
}

#[test]
fn a_broken_new_binary_leaves_the_old_one_serving() {
    let (srv, bin) = upgradable_site(&[]);
    let old = master_pid(&srv);
    replace_binary(
        &bin,
        b"#!/bin/sh\necho 'this build is broken' >&2\nexit 1\n",
    );
    let out = corral_cli(&["upgrade"], &srv.config_path());
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("upgrade failed") && out.stderr.contains("exited with code 1"),
        "{out}"
    );
    assert!(srv.stderr().contains("this build is broken"));
    assert_eq!(master_pid(&srv), old);
    assert_eq!(srv.get("/").text(), "Hello, World!");
    assert_eq!(srv.get("/healthz").status, 200);
    // Fixed: the next upgrade goes through.
    replace_binary(&bin, &std::fs::read(CORRAL).expect("read corral"));
    let started = Instant::now();
    let out = corral_cli(&["upgrade"], &srv.config_path());
    assert!(out.success(), "{out}\n{}", srv.stderr_tail());
    let new = master_pid(&srv);
    assert_ne!(new, old);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(wait_until(Duration::from_secs(20), || !alive(old)));
    assert_eq!(srv.get("/").text(), "Hello, World!");
    let out = corral_cli(&["stop"], &srv.config_path());
    assert!(out.success(), "{out}");
}
