//! `[app] workers = "auto"` as a container user meets it: the count comes
//! from the CPUs and memory the cgroup allows (v1 or v2, whichever this
//! host has), corral is started inside a real cgroup with a CPU quota and
//! a memory limit, and the log says which figures it used.
mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn auto_site() -> Site {
    Site::new().app("hello.py").config(
        &app_config("hello:application", 1, "").replace("workers = 1\n", "workers = \"auto\"\n"),
    )
}

/// A child cgroup with a CPU quota and a memory limit, removed on drop.
struct Group {
    dirs: Vec<PathBuf>,
}

impl Group {
    fn new(cpus: u32, memory: u64) -> Group {
        let name = format!("corral-test-{}", std::process::id());
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let write = |p: PathBuf, v: String| {
            std::fs::write(&p, &v).unwrap_or_else(|e| {
                panic!(
                    "cannot write {v} to {} (the test runs as root): {e}",
                    p.display()
                )
            })
        };
        let mkdir = |p: &PathBuf| {
            std::fs::create_dir(p)
                .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", p.display()))
        };
        if v2 {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu +memory");
            let dir = PathBuf::from(format!("/sys/fs/cgroup/{name}"));
            mkdir(&dir);
            write(dir.join("cpu.max"), format!("{} 100000", cpus * 100_000));
            write(dir.join("memory.max"), memory.to_string());
            return Group { dirs: vec![dir] };
        }
        let cpu = PathBuf::from(format!("/sys/fs/cgroup/cpu/{name}"));
        let mem = PathBuf::from(format!("/sys/fs/cgroup/memory/{name}"));
        mkdir(&cpu);
        mkdir(&mem);
        write(cpu.join("cpu.cfs_period_us"), "100000".into());
        write(cpu.join("cpu.cfs_quota_us"), (cpus * 100_000).to_string());
        write(mem.join("memory.limit_in_bytes"), memory.to_string());
        Group {
            dirs: vec![cpu, mem],
        }
    }

    /// `corral serve` started inside the group.
    fn command(&self, config: &std::path::Path) -> Command {
        let joins: String = self
            .dirs
            .iter()
            .map(|d| format!("echo $$ > '{}/cgroup.procs'; ", d.display()))
            .collect();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{joins}exec \"$0\" serve --config \"$1\""))
            .arg(CORRAL)
            .arg(config);
        cmd
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for d in &self.dirs {
            // Empty once corral's processes are gone.
            wait_until(Duration::from_secs(10), || std::fs::remove_dir(d).is_ok());
        }
    }
}

#[test]
fn auto_uses_every_cpu_without_limits() {
    let srv = auto_site().start();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let want = 2 * cpus + 1;
    assert!(
        srv.wait_worker_count(want, Duration::from_secs(20)),
        "{}",
        srv.stderr_tail()
    );
    let log = srv.stderr();
    assert!(
        log.contains(&format!("→ {want} WSGI workers (2 × CPUs + 1)")),
        "{log}"
    );
    assert!(log.contains(&format!("with {want} workers")), "{log}");
    assert_eq!(srv.get("/").text(), "Hello, World!");
}

#[test]
fn auto_follows_the_cgroup_cpu_quota_and_memory_limit() {
    // 2 CPUs allow 5 WSGI workers; 100 MiB allow fewer (a hello worker
    // holds ~17 MiB, the master and edge ~21 MiB, 80% of the limit used).
    let group = Group::new(2, 100 << 20);
    let site = auto_site();
    let cmd = group.command(&site.config_path());
    let mut srv = site.spawn_with(cmd);
    srv.wait_ready(Duration::from_secs(30));
    let log = srv.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("running"))
        .unwrap_or_else(|| panic!("no sizing line: {log}"));
    assert!(line.contains("(2 CPUs) → 5 WSGI workers"), "{line}");
    assert!(
        line.contains("memory.max = 100 MiB") || line.contains("memory.limit_in_bytes = 100 MiB"),
        "{line}"
    );
    let at_most: usize = line
        .split("at most ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no memory bound in: {line}"));
    assert!((1..5).contains(&at_most), "memory should bind: {line}");
    assert!(line.ends_with(&format!("running {at_most}")), "{line}");
    assert!(
        srv.wait_worker_count(at_most, Duration::from_secs(20)),
        "{}",
        srv.stderr_tail()
    );
    assert_eq!(srv.get("/").text(), "Hello, World!");
    drop(srv);
    drop(group);
}
