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
    let (rx, tx) = nix::unistd::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: called before the master starts anything; single-threaded.
    match unsafe { fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => {
            drop(rx);
            let verdict = match interpreter::start(site) {
                Ok(()) => Python::attach(|py| locate(py, site)),
                Err(e) => Err(e),
            };
            let code = match verdict {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = nix::unistd::write(&tx, msg.as_bytes());
                    1
                }
            };
            // Skip Python finalisation and atexit: this child did its job.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(WaitStatus::StillAlive) => {
                        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                        let _ = waitpid(child, None);
                        return Err("timed out while looking for the module".into());
                    }
                    Ok(s) => break s,
                    Err(e) => return Err(format!("lost the probe process: {e}")),
                }
            };
            let mut msg = String::new();
            let _ = std::fs::File::from(rx).read_to_string(&mut msg);
            match status {
                WaitStatus::Exited(_, 0) => Ok(()),
                _ if !msg.is_empty() => Err(msg),
                other => Err(format!("the module check failed: {other:?}")),
            }
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
