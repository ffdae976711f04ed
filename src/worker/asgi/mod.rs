//! The ASGI worker: one asyncio (or uvloop) event loop on the worker's
//! Python thread, serving the worker's socket itself and running up to
//! `app.concurrency` requests at once (the edge keeps count).
//!
//! ```text
//! boot:  new loop → lifespan startup (a failure is a boot failure) → ready
//! serve: loop.create_unix_server(Hop) — server.py: Hop (one edge
//!        connection), HttpCycle (receive/send of one request)
//!        rt (runtime.rs): head → scope (scope.rs), Framer (framer.rs),
//!        stop flag, recycling, heartbeat for the watchdog (watchdog.rs)
//! stop:  SIGTERM → finish what is in flight → lifespan shutdown → exit
//! ```
//!
//! Python runs on this one thread only; the watchdog thread never takes
//! the GIL.

mod deflate;
mod framer;
mod runtime;
mod scope;
mod watchdog;
mod websocket;

use crate::config::schema::{EventLoop, Lifespan};
use crate::config::Site;
use crate::worker::recycle::Recycle;
use pyo3::prelude::*;
use std::ffi::CString;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;

const SERVER_PY: &str = include_str!("server.py");

/// A booted ASGI app: its loop made, lifespan started.
pub struct Asgi {
    glue: Py<PyModule>,
    server: Py<PyAny>,
    heartbeat: Arc<watchdog::Heartbeat>,
    pub loop_name: String,
}

/// Makes the event loop and runs lifespan startup. Err: the reason the
/// worker cannot come up (the full text is logged here).
pub fn boot(py: Python<'_>, app: Py<PyAny>, site: &Site, recycle: Recycle) -> Result<Asgi, String> {
    let glue = load_glue(py).map_err(|e| crate::worker::interpreter::format_err(py, &e))?;
    let heartbeat = watchdog::Heartbeat::new();
    let rt = runtime::Runtime {
        recycle: Arc::new(recycle),
        heartbeat: heartbeat.clone(),
        root_path: pyo3::types::PyString::intern(py, site.root_path()).unbind(),
    };
    let cfg = &site.config.app;
    let booted = glue.bind(py).getattr("boot").and_then(|boot| {
        boot.call1((
            Py::new(py, rt)?,
            app,
            lifespan_name(cfg.lifespan),
            loop_name(cfg.event_loop),
            cfg.graceful_timeout.0.as_secs_f64(),
            site.timeout().map_or(0.0, |t| t.as_secs_f64()),
            websocket_settings(site),
        ))
    });
    match booted.and_then(|r| r.extract::<(Py<PyAny>, String)>()) {
        Ok((server, loop_name)) => Ok(Asgi {
            glue,
            server,
            heartbeat,
            loop_name,
        }),
        Err(e) => Err(boot_failure(py, &e)),
    }
}

/// Serves the socket until stopped; returns the exit code.
pub fn serve(
    py: Python<'_>,
    asgi: Asgi,
    listener: UnixListener,
    site: &Site,
    id: u64,
    status_fd: RawFd,
) -> i32 {
    watchdog::watch(asgi.heartbeat.clone(), site.timeout(), id, status_fd);
    let fd = listener.into_raw_fd();
    let glue = asgi.glue.bind(py);
    if let Ok(tasks) = glue.getattr("tasks_text") {
        crate::worker::stack_dump::add_tasks(tasks.unbind(), asgi.server.clone_ref(py));
    }
    let served = glue
        .getattr("serve")
        .and_then(|serve| serve.call1((asgi.server, fd)));
    match served {
        Ok(_) => 0,
        Err(e) => {
            let text = crate::worker::interpreter::format_err(py, &e);
            tracing::error!("the ASGI server stopped on an error:\n{}", text.trim_end());
            1
        }
    }
}

fn load_glue(py: Python<'_>) -> PyResult<Py<PyModule>> {
    let code = CString::new(SERVER_PY)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let module = PyModule::from_code(py, &code, c"corral/asgi/server.py", c"corral_asgi")?;
    Ok(module.unbind())
}

/// A lifespan failure says the app's own message; anything else its traceback.
fn boot_failure(py: Python<'_>, e: &PyErr) -> String {
    let text = crate::worker::interpreter::format_err(py, e);
    let is_boot_failure = e.get_type(py).name().is_ok_and(|n| n == "BootFailure");
    if is_boot_failure {
        let msg = e.value(py).to_string();
        tracing::error!("ASGI lifespan startup failed: {msg}");
        format!(
            "lifespan startup failed: {}",
            crate::worker::interpreter::last_line(&msg)
        )
    } else {
        tracing::error!("cannot start the ASGI server:\n{}", text.trim_end());
        crate::worker::interpreter::last_line(&text).to_string()
    }
}

/// `[websocket]` for server.py: max_message, ping_interval, idle_timeout,
/// when open sockets close on a stop, and compression.
fn websocket_settings(site: &Site) -> (usize, f64, f64, f64, bool) {
    let ws = &site.config.websocket;
    let graceful = site.config.app.graceful_timeout.0;
    (
        ws.max_message.0 as usize,
        ws.ping_interval.0.as_secs_f64(),
        ws.idle_timeout.0.as_secs_f64(),
        crate::wire::websockets_close_after(graceful).as_secs_f64(),
        ws.compression,
    )
}

fn lifespan_name(l: Lifespan) -> &'static str {
    match l {
        Lifespan::Auto => "auto",
        Lifespan::On => "on",
        Lifespan::Off => "off",
    }
}

fn loop_name(l: EventLoop) -> &'static str {
    match l {
        EventLoop::Auto => "auto",
        EventLoop::Asyncio => "asyncio",
        EventLoop::Uvloop => "uvloop",
    }
}
