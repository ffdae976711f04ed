//! `corral check` and `serve` verify that `app.module` can be found before
//! starting anything. That needs Python's import system, which the master
//! must never initialise (it forks), so a short-lived child answers.

use super::interpreter;
use crate::config::Site;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};
use pyo3::prelude::*;
use std::io::Read;
use std::time::{Duration, Instant};

/// Ok if the module resolves on the configured sys.path, without running it.
pub fn find_app_module(site: &Site) -> Result<(), String> {
    in_child(
        site,
        Duration::from_secs(20),
        "looking for the module",
        |py, site| locate(py, site).map(|()| String::new()),
    )
    .map(|_| ())
}

/// `corral check`: imports the app as a worker would, with the worker's
/// messages (a wrong attribute, an import that raises, an ASGI app).
/// Ok: the interface found and why (e.g. `ASGI: a FastAPI object with an
/// async __call__`).
pub fn load_app(site: &Site) -> Result<String, String> {
    in_child(
        site,
        Duration::from_secs(60),
        "importing the app",
        |py, site| {
            interpreter::load_app(py, site).map(|l| {
                let name = match l.interface {
                    crate::ipc::Interface::Wsgi => "WSGI",
                    crate::ipc::Interface::Asgi => "ASGI",
                };
                format!("{name} ({})", l.why)
            })
        },
    )
}

/// Runs `f` with Python in a short-lived child (the master must never
/// initialise Python: it forks) and returns its verdict.
fn in_child(
    site: &Site,
    limit: Duration,
    doing: &str,
    f: impl FnOnce(Python<'_>, &Site) -> Result<String, String>,
) -> Result<String, String> {
    let (rx, tx) = nix::unistd::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: called before the master starts anything; single-threaded.
    match unsafe { fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => {
            drop(rx);
            let verdict = crate::master::privileges::as_workers_will_be(site)
                .map_err(|e| format!("{e:#}"))
                .and_then(|()| interpreter::start(site))
                .and_then(|()| Python::attach(|py| f(py, site)));
            let (code, msg) = match verdict {
                Ok(msg) => (0, msg),
                Err(msg) => (1, msg),
            };
            let _ = nix::unistd::write(&tx, msg.as_bytes());
            // Skip Python finalisation and atexit: this child did its job.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(tx);
            // Read while waiting: a long traceback must not fill the pipe.
            let reader = std::thread::spawn(move || {
                let mut msg = String::new();
                let _ = std::fs::File::from(rx).read_to_string(&mut msg);
                msg
            });
            let status = wait_for(child, limit, doing)?;
            let msg = reader.join().unwrap_or_default();
            match status {
                WaitStatus::Exited(_, 0) => Ok(msg),
                _ if !msg.is_empty() => Err(msg),
                other => Err(format!("{doing} failed: {other:?}")),
            }
        }
    }
}

fn wait_for(child: nix::unistd::Pid, limit: Duration, doing: &str) -> Result<WaitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(WaitStatus::StillAlive) => {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(format!("timed out after {limit:?} while {doing}"));
            }
            Ok(s) => return Ok(s),
            Err(e) => return Err(format!("lost the probe process: {e}")),
        }
    }
}

fn locate(py: Python<'_>, site: &Site) -> Result<(), String> {
    let module = &site.app.module;
    // find_spec on a dotted name imports the parents; walk the path finder
    // instead so that no app code runs during a check.
    let code = r#"
def _corral_locate(name):
    import importlib.machinery, importlib.util
    parts = name.split(".")
    path = None
    for i, part in enumerate(parts):
        full = ".".join(parts[: i + 1])
        if path is None:
            spec = importlib.util.find_spec(full) if i == 0 else None
        else:
            spec = importlib.machinery.PathFinder.find_spec(full, path)
        if spec is None:
            return False
        path = spec.submodule_search_locations or []
    return True
"#;
    let found = (|| -> PyResult<bool> {
        let ns = pyo3::types::PyDict::new(py);
        py.run(&std::ffi::CString::new(code)?, Some(&ns), None)?;
        ns.get_item("_corral_locate")?
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("locate helper missing"))?
            .call1((module,))?
            .extract()
    })()
    .map_err(|e| interpreter::format_err(py, &e))?;
    if found {
        return Ok(());
    }
    let mut searched = vec![site.chdir.display().to_string()];
    searched.extend(site.pythonpath.iter().map(|p| p.display().to_string()));
    if let Some(v) = &site.virtualenv {
        searched.push(format!("virtualenv {}", v.display()));
    }
    Err(format!(
        "module `{module}` not found (looked in {} and the Python path)",
        searched.join(", ")
    ))
}
