//! A worker: a forked process embedding CPython that runs the site's WSGI
//! app and serves it to the edge over its own Unix socket.
//!
//! Boot order matters: Python first, then the app import, and only then
//! the socket and the `ready` line, so the edge never routes to a worker
//! that cannot answer. An import error prints the traceback, reports a
//! one-line reason to the master and exits with code 3 (as gunicorn does).

pub mod asgi;
mod in_turn;
mod interpreter;
mod link;
pub mod probe;
pub mod quiet_read;
mod recycle;
pub mod request;
pub mod response;
mod server;
mod stack_dump;
pub mod stderr_lines;
mod withdrawals;
pub mod wsgi;

use crate::config::Site;
use crate::ipc::{send_status, Interface, Serves, Status};
pub use interpreter::Loaded;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use pyo3::prelude::*;
use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::Ordering;
use tracing::{error, info};

pub const EXIT_BOOT_FAILED: i32 = 3;

/// `app.preload`: imports the app in the master, before any fork. Returns
/// the one-line reason on failure (the traceback is logged).
pub fn preload(site: &Site) -> Result<Loaded, String> {
    interpreter::start(site)?;
    Python::attach(|py| {
        interpreter::load_app(py, site).map_err(|traceback| {
            error!(
                "cannot load {}:{}\n{}",
                site.app.module,
                site.app.callable,
                traceback.trim_end()
            );
            interpreter::summary(&traceback)
        })
    })
}

/// Entry point in the forked child; returns the exit code.
pub fn run(
    site: &Site,
    id: u64,
    socket: &Path,
    status_fd: RawFd,
    preloaded: Option<&Loaded>,
) -> i32 {
    // First: every thread started from here on inherits it.
    crate::cpu_policy::apply(site.config.app.cpu_scheduling);
    let pid = std::process::id() as i32;
    install_signal_handlers();
    let fail = |reason: String| {
        send_status(status_fd, &Status::Failed(pid, reason));
        EXIT_BOOT_FAILED
    };
    if preloaded.is_none() {
        if let Err(e) = interpreter::start(site) {
            error!("worker {pid}: {e}");
            return fail(e);
        }
    }
    // After the environment is set: from here on the process has threads.
    stderr_lines::install(id);
    Python::attach(|py| {
        let loaded = match preloaded {
            Some(l) => Ok(l.clone_ref(py)),
            None => interpreter::load_app(py, site),
        };
        let loaded = match loaded {
            Ok(l) => l,
            Err(traceback) => {
                error!(
                    "worker {pid} cannot load {}:{}\n{}",
                    site.app.module,
                    site.app.callable,
                    traceback.trim_end()
                );
                return fail(interpreter::summary(&traceback));
            }
        };
        let recycle = || recycle::Recycle::new(site, status_fd);
        let booted = match loaded.interface {
            Interface::Wsgi => {
                let (threads, costs) = (site.threads(), site.measures_requests());
                wsgi::Wsgi::new(py, loaded.app, threads, costs, site.root_path())
                    .map(Booted::Wsgi)
                    .map_err(|e| interpreter::format_err(py, &e))
            }
            Interface::Asgi => asgi::boot(py, loaded.app, site, recycle()).map(Booted::Asgi),
        };
        let booted = match booted {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        let _ = std::fs::remove_file(socket);
        let listener = match UnixListener::bind(socket) {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on {}: {e}", socket.display())),
        };
        if let Err(e) = stack_dump::install(py, &socket.with_extension("stacks")) {
            // Serving matters more than `corral dump`: say so and go on.
            error!("worker {pid}: corral dump will not see this worker: {e}");
        }
        send_status(status_fd, &Status::Ready(pid, Some(booted.serves(site))));
        info!("worker {pid} (id {id}) booted: {}", booted.describe());
        let code = match booted {
            Booted::Wsgi(wsgi) => server::serve(
                py,
                Box::new(wsgi),
                listener,
                socket,
                site.threads(),
                recycle(),
            ),
            Booted::Asgi(asgi) => asgi::serve(py, asgi, listener, site, id, status_fd),
        };
        let _ = std::fs::remove_file(socket);
        let _ = std::fs::remove_file(crate::wire::withdraw::control_path(socket));
        code
    })
}

/// An app ready to serve.
enum Booted {
    Wsgi(wsgi::Wsgi),
    Asgi(asgi::Asgi),
}

impl Booted {
    fn serves(&self, site: &Site) -> Serves {
        match self {
            Booted::Wsgi(_) => Serves {
                interface: Interface::Wsgi,
                capacity: site.threads(),
            },
            Booted::Asgi(_) => Serves {
                interface: Interface::Asgi,
                capacity: site.config.app.concurrency,
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Booted::Wsgi(_) => "WSGI".into(),
            Booted::Asgi(a) => format!("ASGI on {}", a.loop_name),
        }
    }
}

extern "C" fn on_sigterm(_: libc::c_int) {
    server::STOPPING.store(true, Ordering::SeqCst);
}

extern "C" fn on_sigquit(_: libc::c_int) {
    // Fast stop: no draining, no Python finalisation.
    unsafe { libc::_exit(0) };
}

fn install_signal_handlers() {
    let term = SigAction::new(
        SigHandler::Handler(on_sigterm),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let quit = SigAction::new(
        SigHandler::Handler(on_sigquit),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handlers only touch an atomic or call _exit.
    unsafe {
        let _ = sigaction(Signal::SIGTERM, &term);
        let _ = sigaction(Signal::SIGQUIT, &quit);
        let _ = sigaction(Signal::SIGINT, &quit);
    }
}
