//! Saying plainly why a child died: exit code, signal, the kernel's OOM
//! killer (read from the cgroup's memory.events), or corral's own timeout.

use nix::sys::signal::Signal;

pub enum Death {
    Exited(i32),
    Signaled(Signal, bool),
}

impl Death {
    pub fn is_sigkill(&self) -> bool {
        matches!(self, Death::Signaled(Signal::SIGKILL, _))
    }

    /// A worker's death: exit code 3 means "the app failed to load" only
    /// before the worker was ready; after, the app itself exited with 3.
    pub fn describe_worker(
        &self,
        ready: bool,
        killed_by_corral: Option<&str>,
        oom: bool,
    ) -> String {
        match self {
            Death::Exited(3) if ready => {
                "exited with code 3 while serving (the app called sys.exit(3) or os._exit(3)?)"
                    .into()
            }
            _ => self.describe(killed_by_corral, oom),
        }
    }

    /// Not a worker (the new master of an upgrade): its exit code is its
    /// own, explained in its log.
    pub fn describe_process(&self, oom: bool) -> String {
        match self {
            Death::Exited(c) => format!("exited with code {c} (its log above says why)"),
            Death::Signaled(..) => self.describe(None, oom),
        }
    }

    /// `killed_by_corral` is set when corral itself sent the fatal signal.
    pub fn describe(&self, killed_by_corral: Option<&str>, oom: bool) -> String {
        match self {
            Death::Exited(0) => "exited normally".into(),
            Death::Exited(3) => {
                "exited with code 3: the app failed to load (traceback above)".into()
            }
            Death::Exited(70) => "exited with code 70: internal error (see the log above)".into(),
            Death::Exited(c) => format!("exited with code {c}"),
            Death::Signaled(sig, core) => {
                let core = if *core { ", core dumped" } else { "" };
                if let Some(why) = killed_by_corral {
                    return format!("was killed by corral ({why}) [{sig:?}{core}]");
                }
                let what = match sig {
                    Signal::SIGKILL if oom => "was killed by the kernel's OOM killer (out of memory)",
                    Signal::SIGKILL => "was killed by SIGKILL from outside corral (an operator, or an OOM killer: check dmesg)",
                    Signal::SIGSEGV => "crashed with a segmentation fault (a C extension bug? the Python stack is above)",
                    Signal::SIGABRT => "aborted (SIGABRT)",
                    Signal::SIGBUS => "crashed with SIGBUS",
                    Signal::SIGTERM => "was stopped by SIGTERM from outside corral",
                    _ => "was killed by a signal",
                };
                format!("{what} [{sig:?}{core}]")
            }
        }
    }
}

/// The `oom_kill` counter of this process's cgroup (cgroup v2), if readable.
pub fn oom_kills() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let events =
        std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.events", path.trim())).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions() {
        assert!(Death::Signaled(Signal::SIGKILL, false)
            .describe(None, true)
            .contains("OOM killer"));
        assert!(Death::Signaled(Signal::SIGKILL, false)
            .describe(Some("request timeout: GET /"), false)
            .contains("killed by corral (request timeout: GET /)"));
        assert!(Death::Exited(3)
            .describe(None, false)
            .contains("failed to load"));
        assert!(Death::Exited(3)
            .describe_worker(true, None, false)
            .contains("while serving"));
    }
}
