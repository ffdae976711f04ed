//! `[app] workers = "auto"`: how many workers the machine or container can
//! run. The CPU half reads the cgroup's quota (v2 `cpu.max`, v1
//! `cpu.cfs_quota_us`), else the CPUs this process may run on. The memory
//! half, which gunicorn and granian do not have, divides the cgroup's
//! memory limit (with headroom, less what the master and edge hold) by what
//! the first worker actually takes once it has loaded the app. The smaller
//! of the two wins, and the log says why.

use crate::ipc::Interface;

/// What the container allows, and where each figure came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowance {
    pub cpus: f64,
    pub cpus_from: String,
    pub memory: Option<u64>,
    pub memory_from: String,
}

/// Of the memory limit, what the processes may plan to use: the rest is
/// for growth between recycles and the page cache.
const HEADROOM: f64 = 0.8;

impl Allowance {
    pub fn read() -> Allowance {
        let groups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let (cpus, cpus_from) = cpu_quota(&groups).unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            (n as f64, format!("{n} CPUs available to this process"))
        });
        let (memory, memory_from) = match memory_limit(&groups) {
            Some((bytes, from)) => (Some(bytes), from),
            None => (None, "no cgroup memory limit".to_string()),
        };
        Allowance {
            cpus,
            cpus_from,
            memory,
            memory_from,
        }
    }

    /// Workers for the CPUs: a WSGI worker with one thread waits on I/O
    /// much of the time, so 2 × CPUs + 1 (gunicorn's rule); one with
    /// threads, or an ASGI event loop, keeps its CPU busy: one per CPU.
    pub fn by_cpu(&self, interface: Option<Interface>, threads: usize) -> usize {
        let cpus = self.cpus.ceil().max(1.0) as usize;
        match interface {
            Some(Interface::Wsgi) if threads == 1 => 2 * cpus + 1,
            _ => cpus,
        }
    }

    /// Workers that fit the memory limit, given one worker's RSS and what
    /// the master and edge hold; None without a limit.
    pub fn by_memory(&self, worker_rss: u64, others_rss: u64) -> Option<usize> {
        let limit = self.memory? as f64 * HEADROOM;
        let room = (limit - others_rss as f64).max(0.0);
        Some(((room / worker_rss.max(1) as f64) as usize).max(1))
    }
}

/// The decision and its reasoning, for the log.
pub fn decide(
    allowance: &Allowance,
    interface: Option<Interface>,
    threads: usize,
    rss: Option<(u64, u64)>,
) -> (usize, String) {
    let cpu = allowance.by_cpu(interface, threads);
    let kind = match interface {
        Some(Interface::Wsgi) if threads == 1 => "WSGI workers (2 × CPUs + 1)",
        Some(Interface::Wsgi) => "WSGI workers with threads (one per CPU)",
        Some(Interface::Asgi) => "ASGI workers (one per CPU)",
        None => "workers (one per CPU until the app's interface is known)",
    };
    let mut why = format!("{} → {cpu} {kind}", allowance.cpus_from);
    let mem = rss.and_then(|(worker, others)| {
        let n = allowance.by_memory(worker, others)?;
        why.push_str(&format!(
            "; {}, {:.0}% of it less {} MiB for the master and edge, {} MiB per worker → at most {n}",
            allowance.memory_from,
            HEADROOM * 100.0,
            others >> 20,
            worker >> 20
        ));
        Some(n)
    });
    if rss.is_some() && mem.is_none() {
        why.push_str(&format!("; {}", allowance.memory_from));
    }
    let n = mem.map_or(cpu, |m| m.min(cpu)).clamp(1, 1024);
    (n, why)
}

/// The resident memory of a process, from /proc.
pub fn rss_of(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A controller's folder for this process: cgroup v2 (`0::/path`) or v1
/// (`N:cpu,cpuacct:/path`), trying the process's own group first, then the
/// mount's root (a container that sees only its own group there).
fn group_dirs(groups: &str, controller: &str) -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    for line in groups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(names), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let base = if names.is_empty() {
            std::path::PathBuf::from("/sys/fs/cgroup")
        } else if names.split(',').any(|n| n == controller) {
            std::path::PathBuf::from(format!("/sys/fs/cgroup/{names}"))
        } else {
            continue;
        };
        dirs.push(base.join(path.trim_start_matches('/')));
        dirs.push(base);
    }
    dirs
}

fn read_in(dirs: &[std::path::PathBuf], file: &str) -> Option<(String, String)> {
    dirs.iter().find_map(|d| {
        let p = d.join(file);
        let text = std::fs::read_to_string(&p).ok()?;
        Some((text.trim().to_string(), p.display().to_string()))
    })
}

fn cpu_quota(groups: &str) -> Option<(f64, String)> {
    let dirs = group_dirs(groups, "cpu");
    if let Some((max, from)) = read_in(&dirs, "cpu.max") {
        let cpus = parse_cpu_max(&max)?;
        return Some((cpus, format!("{from} = {max} ({cpus} CPUs)")));
    }
    let (quota, from) = read_in(&dirs, "cpu.cfs_quota_us")?;
    let (period, _) = read_in(&dirs, "cpu.cfs_period_us")?;
    let cpus = parse_cpu_max(&format!("{quota} {period}"))?;
    Some((cpus, format!("{from} = {quota} of {period} ({cpus} CPUs)")))
}

/// `"200000 100000"` → 2 CPUs; `"max 100000"` or a v1 `-1` quota → none.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok().filter(|q: &f64| *q > 0.0)?;
    let period: f64 = parts.next()?.parse().ok().filter(|p: &f64| *p > 0.0)?;
    Some(quota / period)
}

fn memory_limit(groups: &str) -> Option<(u64, String)> {
    let dirs = group_dirs(groups, "memory");
    let (text, from) =
        read_in(&dirs, "memory.max").or_else(|| read_in(&dirs, "memory.limit_in_bytes"))?;
    let bytes = parse_memory_limit(&text)?;
    Some((bytes, format!("{from} = {} MiB", bytes >> 20)))
}

/// v2 `max` and v1's "unlimited" (a page-rounded i64::MAX) are no limit.
fn parse_memory_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowance(cpus: f64, memory: Option<u64>) -> Allowance {
        Allowance {
            cpus,
            cpus_from: "test".into(),
            memory,
            memory_from: "test limit".into(),
        }
    }

    #[test]
    fn cgroup_files_parse() {
        assert_eq!(parse_cpu_max("200000 100000"), Some(2.0));
        assert_eq!(parse_cpu_max("50000 100000"), Some(0.5));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("-1 100000"), None);
        assert_eq!(parse_memory_limit("1073741824"), Some(1 << 30));
        assert_eq!(parse_memory_limit("max"), None);
        assert_eq!(parse_memory_limit("9223372036854771712"), None);
    }

    #[test]
    fn v1_and_v2_group_paths() {
        let v2 = group_dirs("0::/system.slice/corral.service\n", "memory");
        assert_eq!(
            v2[0],
            std::path::Path::new("/sys/fs/cgroup/system.slice/corral.service")
        );
        let v1 = group_dirs("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n", "cpu");
        assert_eq!(
            v1[0],
            std::path::Path::new("/sys/fs/cgroup/cpu,cpuacct/docker/abc")
        );
        assert_eq!(v1[1], std::path::Path::new("/sys/fs/cgroup/cpu,cpuacct"));
    }

    #[test]
    fn the_smaller_of_cpu_and_memory_wins() {
        let a = allowance(2.0, Some(1 << 30));
        // 2 CPUs, WSGI sync: 5; 80% of 1 GiB less 100 MiB, 100 MiB each: 7.
        let (n, why) = decide(&a, Some(Interface::Wsgi), 1, Some((100 << 20, 100 << 20)));
        assert_eq!(n, 5, "{why}");
        // 300 MiB workers: 2 fit.
        let (n, why) = decide(&a, Some(Interface::Wsgi), 1, Some((300 << 20, 100 << 20)));
        assert_eq!(n, 2, "{why}");
        assert!(why.contains("at most 2"), "{why}");
        // ASGI: one per CPU, a fraction of a CPU rounds up.
        assert_eq!(
            decide(&allowance(1.5, None), Some(Interface::Asgi), 1, None).0,
            2
        );
        // Never below one, even when nothing fits.
        let (n, _) = decide(&a, Some(Interface::Asgi), 1, Some((2 << 30, 0)));
        assert_eq!(n, 1);
    }
}
