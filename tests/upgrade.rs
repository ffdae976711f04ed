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

/// `corral <command> --config <site.toml>` (the harness's `corral`).
fn corral_cli(command: &str, config: &std::path::Path) -> CmdOutput {
    let config = config.display().to_string();
    corral(&[command, "--config", &config], Duration::from_secs(200))
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

#[test]
fn an_upgrade_under_load_drops_nothing_and_tells_systemd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (notify_path, notes) = Notes::listen(dir.path());
    let (srv, bin) = upgradable_site(&[("NOTIFY_SOCKET", &notify_path)]);
    let old = srv.pid_in_file();
    let load = Load::start(srv.port, LoadOpts::default(), |_, _| "/".to_string());
    std::thread::sleep(Duration::from_millis(500));
    replace_binary(&bin, &std::fs::read(CORRAL).expect("read corral"));
    let exe = std::fs::read_link(format!("/proc/{old}/exe")).expect("old exe");
    assert!(exe.display().to_string().ends_with("(deleted)"), "{exe:?}");
    let out = corral_cli("upgrade", &srv.config_path());
    assert!(out.success(), "{out}\n{}", srv.stderr_tail());
    assert!(out.stdout.contains("upgraded: corral (pid"), "{out}");
    let new = srv.pid_in_file();
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
    let report = load.finish();
    assert!(report.failures().is_empty(), "{}", report.summary(10));
    assert!(report.total() > 200, "{}", report.summary(0));
    let wrong = report
        .outcomes
        .iter()
        .filter(|o| o.body != "Hello, World!")
        .count();
    assert_eq!(wrong, 0, "{}", report.summary(5));
    // systemd heard the hand-over from the old master.
    let (handed, _) = notes
        .wait_for(0, &format!("MAINPID={new}"))
        .unwrap_or_else(|| panic!("no MAINPID={new}: {:?}", notes.all()));
    // The new master is the one that stops, through the same pid file, and
    // tells systemd (the old one says nothing after handing over).
    let out = corral_cli("stop", &srv.config_path());
    assert!(out.success(), "{out}");
    assert!(!alive(new));
    // It leaves no run files behind, the upgrade's outcome included.
    for name in ["corral.pid", "corral.pid.upgrade"] {
        assert!(!srv.path().join(name).exists(), "{name} left behind");
    }
    let after: Vec<String> = notes.all().split_off(handed + 1);
    let stops = after.iter().filter(|m| m.contains("STOPPING=1")).count();
    assert_eq!(stops, 1, "{after:?}");
}

#[test]
fn a_broken_new_binary_leaves_the_old_one_serving() {
    let (srv, bin) = upgradable_site(&[]);
    let old = srv.pid_in_file();
    replace_binary(
        &bin,
        b"#!/bin/sh\necho 'this build is broken' >&2\nexit 1\n",
    );
    let out = corral_cli("upgrade", &srv.config_path());
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("upgrade failed") && out.stderr.contains("exited with code 1"),
        "{out}"
    );
    assert!(srv.stderr().contains("this build is broken"));
    assert_eq!(srv.pid_in_file(), old);
    assert_eq!(srv.get("/").text(), "Hello, World!");
    assert_eq!(srv.get("/healthz").status, 200);
    // Fixed: the next upgrade goes through.
    replace_binary(&bin, &std::fs::read(CORRAL).expect("read corral"));
    let started = Instant::now();
    let out = corral_cli("upgrade", &srv.config_path());
    assert!(out.success(), "{out}\n{}", srv.stderr_tail());
    let new = srv.pid_in_file();
    assert_ne!(new, old);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(wait_until(Duration::from_secs(20), || !alive(old)));
    assert_eq!(srv.get("/").text(), "Hello, World!");
    let out = corral_cli("stop", &srv.config_path());
    assert!(out.success(), "{out}");
}
