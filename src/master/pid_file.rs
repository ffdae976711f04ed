//! `[server] pid_file`, and `corral reload` / `corral stop`, which read it
//! and signal the running master.

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Removes the file when the master exits (unless a newer master, after
/// an upgrade, has written its own pid there).
pub struct PidFile(PathBuf);

impl PidFile {
    /// `replacing`: the master this one upgrades, whose pid may be there.
    pub fn write(path: &Path, replacing: Option<i32>) -> anyhow::Result<Self> {
        if let Ok(old) = std::fs::read_to_string(path) {
            if let Ok(pid) = old.trim().parse::<i32>() {
                if pid as u32 != std::process::id()
                    && Some(pid) != replacing
                    && kill(Pid::from_raw(pid), None).is_ok()
                {
                    bail!(
                        "{} says corral is already running as pid {pid}",
                        path.display()
                    );
                }
            }
        }
        // A previous master's reload outcomes mean nothing to this one.
        let _ = std::fs::remove_file(super::reload::outcome_path(path));
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(super::reload::outcome_path(&self.0));
            // An upgrade's outcome, written by the master this one replaced.
            let _ = std::fs::remove_file(super::upgrade::outcome_path(&self.0));
        }
    }
}

/// Sends `sig` to the master named in the pid file; with `wait`, returns
/// once it has exited (or fails after `wait`).
pub fn signal_running(pid_file: &Path, sig: Signal, wait: Option<Duration>) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(pid_file).with_context(|| {
        format!(
            "cannot read pid file {} (is corral running?)",
            pid_file.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a pid", pid_file.display()))?;
    kill(Pid::from_raw(pid), sig).with_context(|| format!("cannot signal corral (pid {pid})"))?;
    if let Some(limit) = wait {
        let deadline = Instant::now() + limit;
        while running(pid) {
            if Instant::now() >= deadline {
                bail!("corral (pid {pid}) is still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(pid)
}

/// The pid in `pid_file`, if that process is running.
pub fn running_pid(pid_file: &Path) -> Option<i32> {
    let pid = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    running(pid).then_some(pid)
}

/// Alive, and neither a zombie nor on its way out (an exited master whose
/// parent has not reaped it yet has stopped, as far as `corral stop` is
/// concerned; a SIGKILLed worker has closed its sockets, which the edge
/// sees, a moment before it becomes a zombie).
pub(super) fn running(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| !ending(rest)),
        Err(_) => false,
    }
}

/// From the fields after the command in /proc/PID/stat: a zombie, or a
/// process that has begun to exit (PF_EXITING in its flags, field 9).
fn ending(fields: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    let mut fields = fields.split_whitespace();
    let zombie = fields.next() == Some("Z");
    let flags = fields
        .nth(5)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    zombie || flags & PF_EXITING != 0
}

#[cfg(test)]
mod tests {
    use super::ending;

    #[test]
    fn a_zombie_or_an_exiting_process_is_ending() {
        // The fields after "(comm)": state, ppid, pgrp, session, tty, tpgid, flags.
        assert!(!ending(" S 1 2 2 0 -1 4194560 0 0"));
        assert!(ending(" Z 1 2 2 0 -1 4194560 0 0"));
        assert!(ending(" R 1 2 2 0 -1 4194564 0 0"));
        assert!(ending(" D 1 2 2 0 -1 4 0 0"));
        assert!(!ending(" S 1 2 2 0 -1 garbage"));
    }
}
