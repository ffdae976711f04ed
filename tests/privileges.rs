//! `[server] user` / `group`: the master keeps its identity (it binds the
//! ports), the edge and every worker switch right after fork.
//!
//! The user stays root here: on this machine Python lives under /root
//! (mode 0700), which another user could not read. The group switch is the
//! same code path (setgroups, setgid, setuid) and is fully visible in
//! /proc, so that is what is checked.
mod common;

use common::*;

/// The (real, effective) ids and the supplementary groups of `pid`.
fn ids(pid: i32) -> Option<(Vec<u32>, Vec<u32>, Vec<u32>)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    Some((field("Uid:"), field("Gid:"), field("Groups:")))
}

#[test]
fn edge_and_workers_take_the_configured_group() {
    // SAFETY: plain libc calls without arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: switching users needs root (CI runs as root)");
        return;
    }
    let Some(nogroup) = nix::unistd::Group::from_name("nogroup")
        .ok()
        .flatten()
        .or_else(|| nix::unistd::Group::from_name("nobody").ok().flatten())
    else {
        panic!("no `nogroup` or `nobody` group on this machine");
    };
    let gid = nogroup.gid.as_raw();
    let site = Site::new().app("hello.py").config(&format!(
        "[server]\nlisten = [\"127.0.0.1:{{port}}\"]\nuser = \"root\"\ngroup = \"{}\"\n\n\
         [app]\nmodule = \"hello:application\"\nchdir = \".\"\nworkers = 2\n",
        nogroup.name
    ));
    let srv = site.start();
    let r = srv.get("/");
    srv.assert_status(&r, 200, "GET / with [server] group set");

    let master = ids(srv.pid()).unwrap_or_else(|| srv.fail("cannot read the master's ids"));
    if master.1.first() != Some(&0) {
        srv.fail(format!("the master should keep gid 0, has {:?}", master.1));
    }
    for pid in srv.edge_and_worker_pids(2) {
        let Some((uid, gids, groups)) = ids(pid) else {
            srv.fail(format!("cannot read the ids of child {pid}"));
        };
        if uid.iter().any(|&u| u != 0) || gids.iter().any(|&g| g != gid) || groups != [gid] {
            srv.fail(format!(
                "child {pid}: expected uid 0, every gid {gid} and groups [{gid}]; \
                 got Uid {uid:?}, Gid {gids:?}, Groups {groups:?}"
            ));
        }
    }
    // Still serving after the checks (the workers own their sockets).
    let r = srv.get("/again");
    srv.assert_status(&r, 200, "second GET");
}

/// `corral check` imports the app as the configured user and group, as
/// serve's workers will run it, so an app or virtualenv they cannot read
/// fails the check rather than every worker's boot. It imported as root
/// and passed (found by helper-22). The app records the group it was
/// imported with.
#[test]
fn check_imports_the_app_as_the_configured_group() {
    // SAFETY: plain libc call without arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: switching users needs root (CI runs as root)");
        return;
    }
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .ok()
        .flatten()
        .or_else(|| nix::unistd::Group::from_name("nobody").ok().flatten())
        .expect("a `nogroup` or `nobody` group");
    let app = "import os\nopen('imported-as.txt', 'w').write(str(os.getgid()))\n\
               def application(environ, start_response):\n    \
               start_response('200 OK', [])\n    return [b'ok']\n";
    let site = Site::new().file("who.py", app).config(&format!(
        "[server]\nlisten = [\"127.0.0.1:{{port}}\"]\nuser = \"root\"\ngroup = \"{}\"\n\n\
         [app]\nmodule = \"who:application\"\nchdir = \".\"\nworkers = 1\n",
        nogroup.name
    ));
    let out = site.check();
    assert!(out.success(), "{out}");
    let gid = std::fs::read_to_string(site.path().join("imported-as.txt")).expect("imported");
    assert_eq!(gid, nogroup.gid.as_raw().to_string(), "{out}");
}
