//! Forking a child (the edge or a worker) safely from the single-threaded
//! master, and making sure the child can never outlive it.

use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::unistd::{fork, getppid, ForkResult, Pid};
use std::os::fd::RawFd;

/// Forks and runs `body` in the child, which exits with its return code.
///
/// In the child: the parent-death signal is set (so even a SIGKILLed master
/// leaves no orphans), the master's blocked signal mask is cleared, and every
/// inherited fd except stdio and `keep` is closed, so children do not hold
/// each other's pipes open.
///
/// With `python` (app.preload: this process holds an interpreter) the fork
/// goes through CPython's own hooks, so its locks and thread state are
/// consistent in the child.
pub fn fork_child(keep: &[RawFd], python: bool, body: impl FnOnce() -> i32) -> nix::Result<Pid> {
    let master = nix::unistd::getpid();
    // SAFETY: the master never starts a thread, so the child gets a
    // consistent copy of the whole process.
    let forked = if python {
        pyo3::Python::attach(|_py| unsafe {
            pyo3::ffi::PyOS_BeforeFork();
            let r = fork();
            match r {
                Ok(ForkResult::Child) => pyo3::ffi::PyOS_AfterFork_Child(),
                _ => pyo3::ffi::PyOS_AfterFork_Parent(),
            }
            r
        })
    } else {
        unsafe { fork() }
    };
    match forked? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let _ = prctl::set_pdeathsig(Signal::SIGKILL);
            // The master may have died between fork and prctl.
            if getppid() != master {
                unsafe { libc::_exit(1) };
            }
            super::signals::reset_in_child();
            close_inherited_fds(keep);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(70);
            std::process::exit(code)
        }
    }
}

fn close_inherited_fds(keep: &[RawFd]) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            unsafe { libc::close(fd) };
        }
    }
}
