//! app.preload: the master imports the app once and forks the workers from
//! it, so the import runs once and the app's memory is shared copy-on-write.
//! Without preload every worker imports (and owns) its own copy.
mod common;

use common::*;
use std::fs;
use std::time::Duration;

const WORKERS: usize = 3;
const BALLAST_MIB: u64 = 50;

fn preload_site(preload: bool) -> Site {
    let extra = format!("preload = {preload}\nqueue_timeout = \"30s\"");
    let cfg = app_config("lifecycle_preload:application", WORKERS as u32, &extra).replacen(
        "\n[limits]",
        &format!("\n[app.env]\nLIFECYCLE_BALLAST_MIB = \"{BALLAST_MIB}\"\n\n[limits]"),
        1,
    );
    Site::new().app("lifecycle_preload.py").config(&cfg)
}

fn import_lines(srv: &Running) -> Vec<i32> {
    fs::read_to_string(srv.path().join("imports.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// (pid, rollup) of every worker, printed.
fn worker_memory(srv: &Running, label: &str) -> Vec<(i32, MemRollup)> {
    let mut out = Vec::new();
    for pid in srv.worker_pids() {
        let m = mem_rollup(pid)
            .unwrap_or_else(|| srv.fail(format!("cannot read /proc/{pid}/smaps_rollup")));
        eprintln!(
            "{label}: worker {pid}: Rss {} KiB, Pss {} KiB, Shared {} KiB (clean {} + dirty {}), Private {} KiB",
            m.rss_kib,
            m.pss_kib,
            m.shared_kib(),
            m.shared_clean_kib,
            m.shared_dirty_kib,
            m.private_kib()
        );
        out.push((pid, m));
    }
    out
}

#[test]
fn preload_imports_once_and_workers_share_the_apps_memory() {
    let srv = preload_site(true).start();
    if !srv.wait_worker_count(WORKERS, Duration::from_secs(15)) {
        srv.fail(format!(
            "expected {WORKERS} workers, have {:?}",
            srv.worker_pids()
        ));
    }
    let imports = import_lines(&srv);
    if imports != vec![srv.pid()] {
        srv.fail(format!(
            "with preload = true the app should be imported exactly once, by the master {}: imports.log has {imports:?}",
            srv.pid()
        ));
    }
    // The workers answer (not the master), all with the same inherited object.
    let workers = srv.worker_pids();
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..6 {
        let r = srv.get(&format!("/ballast?i={i}"));
        srv.assert_status(&r, 200, "GET /ballast");
        let text = r.text();
        let mut w = text.split_whitespace();
        assert_eq!(
            w.next(),
            Some((BALLAST_MIB << 20).to_string().as_str()),
            "ballast size: {text:?}"
        );
        ids.insert(w.next().unwrap_or("").to_string());
        let pid: i32 = srv.get("/pid").text().trim().parse().unwrap_or(0);
        if !workers.contains(&pid) {
            srv.fail(format!(
                "/pid answered {pid}, not one of the workers {workers:?}"
            ));
        }
    }
    assert_eq!(
        ids.len(),
        1,
        "every worker should hold the master's BALLAST object (same id): {ids:?}"
    );

    let mem = worker_memory(&srv, "preload");
    let rss: u64 = mem.iter().map(|(_, m)| m.rss_kib).sum();
    let pss: u64 = mem.iter().map(|(_, m)| m.pss_kib).sum();
    eprintln!(
        "preload: workers' Rss total {rss} KiB, Pss total {pss} KiB (Pss x 1.5 = {} KiB)",
        pss * 3 / 2
    );
    for (pid, m) in &mem {
        if m.shared_kib() < (BALLAST_MIB - 10) * 1024 {
            srv.fail(format!(
                "worker {pid} shares only {} KiB with other processes; the {BALLAST_MIB} MiB imported by the master should be shared copy-on-write: {m:?}",
                m.shared_kib()
            ));
        }
    }
    if pss * 3 / 2 >= rss {
        srv.fail(format!(
            "workers' Pss ({pss} KiB) is not well below their Rss ({rss} KiB): memory is not shared"
        ));
    }
}

#[test]
fn without_preload_every_worker_imports_its_own_copy() {
    let srv = preload_site(false).start();
    if !srv.wait_worker_count(WORKERS, Duration::from_secs(15)) {
        srv.fail(format!(
            "expected {WORKERS} workers, have {:?}",
            srv.worker_pids()
        ));
    }
    let workers = srv.worker_pids();
    let mut imports = import_lines(&srv);
    imports.sort();
    if imports != workers {
        srv.fail(format!(
            "without preload each of the {WORKERS} workers imports the app once: imports.log has {imports:?}, workers are {workers:?} (master {})",
            srv.pid()
        ));
    }
    let mem = worker_memory(&srv, "no preload");
    let rss: u64 = mem.iter().map(|(_, m)| m.rss_kib).sum();
    let pss: u64 = mem.iter().map(|(_, m)| m.pss_kib).sum();
    eprintln!("no preload: workers' Rss total {rss} KiB, Pss total {pss} KiB");
    for (pid, m) in &mem {
        if m.private_kib() < (BALLAST_MIB - 5) * 1024 {
            srv.fail(format!(
                "worker {pid} should own its {BALLAST_MIB} MiB copy privately without preload: {m:?}"
            ));
        }
    }
}
