//! PEP 3333 on top of a fully read request: builds the environ, provides
//! `start_response` / `write` / `wsgi.errors` / `wsgi.file_wrapper`, runs the
//! app and drives its iterable into a [`ResponseWriter`].
//!
//! Invariant: this runs on a Python thread with the GIL held; the only
//! blocking I/O (writes to the edge) happens inside `py.detach`. The app's
//! iterable always gets `close()` called, whatever happened.

mod environ;
mod start_response;
mod streams;

use start_response::{StartResponse, Started};
use streams::{ErrorLog, FileWrapper};

use super::request::Request;
use super::response::ResponseWriter;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use tracing::error;

/// Per-process objects reused by every request.
pub struct Wsgi {
    app: Py<PyAny>,
    base_environ: Py<PyDict>,
    bytes_io: Py<PyAny>,
    io_open: Py<PyAny>,
    /// `[log] request_costs`: measure each request for its receipt.
    costs: bool,
    /// `[app] root_path`: SCRIPT_NAME, taken off the front of PATH_INFO.
    root_path: String,
}

impl Wsgi {
    /// `root_path`: `[app] root_path` ("" or "/blog").
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        threads: usize,
        costs: bool,
        root_path: &str,
    ) -> PyResult<Self> {
        let root_path = root_path.to_string();
        let base = PyDict::new(py);
        base.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
        base.set_item("wsgi.multithread", threads > 1)?;
        base.set_item("wsgi.multiprocess", true)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item("wsgi.errors", Py::new(py, ErrorLog::default())?)?;
        base.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        base.set_item("SCRIPT_NAME", &root_path)?;
        base.set_item(
            "SERVER_SOFTWARE",
            format!("corral/{}", env!("CARGO_PKG_VERSION")),
        )?;
        let io = py.import("io")?;
        Ok(Wsgi {
            app,
            costs,
            root_path,
            base_environ: base.unbind(),
            bytes_io: io.getattr("BytesIO")?.unbind(),
            io_open: io.getattr("open")?.unbind(),
        })
    }

    /// Runs one request to completion; returns whether the connection to the
    /// edge can carry another request.
    pub fn handle(&self, py: Python<'_>, req: Request, stream: Arc<UnixStream>) -> bool {
        let head = req.method == "HEAD";
        let writer = Arc::new(Mutex::new(ResponseWriter::new(
            stream,
            head,
            req.keep_alive,
            self.costs,
        )));
        let summary = format!("{} {}", req.method, req.target);
        let environ = match self.environ(py, req) {
            Ok(e) => e,
            Err(e) => {
                self.log_exception(py, &summary, &e);
                return with(&writer, |w| {
                    w.error(py, "500 Internal Server Error");
                    w.keep_alive
                });
            }
        };
        let state = Arc::new(Mutex::new(Started::default()));
        let start_response = StartResponse {
            state: state.clone(),
            writer: writer.clone(),
        };
        let result =
            Py::new(py, start_response).and_then(|sr| self.app.bind(py).call1((environ, sr)));
        match result {
            Err(e) => {
                self.log_exception(py, &summary, &e);
                with(&writer, |w| w.fail(py));
            }
            Ok(iterable) => {
                let outcome = drive(py, &iterable, &state, &writer);
                // PEP 3333: close() is called whatever happened, also when
                // the client went away mid-body.
                if let Ok(close) = iterable.getattr("close") {
                    if let Err(e) = close.call0() {
                        self.log_exception(py, &format!("{summary} (in close())"), &e);
                    }
                }
                if let Err(e) = outcome {
                    self.log_exception(py, &summary, &e);
                    with(&writer, |w| w.fail(py));
                }
            }
        }
        with(&writer, |w| w.keep_alive && !w.broken)
    }

    fn log_exception(&self, py: Python<'_>, what: &str, e: &PyErr) {
        let text = format_err(py, e);
        error!("error in app for {what}:\n{}", text.trim_end());
    }
}

impl super::server::App for Wsgi {
    fn handle(&self, py: Python<'_>, req: Request, stream: Arc<UnixStream>) -> bool {
        Wsgi::handle(self, py, req, stream)
    }
}

fn with<T>(w: &Arc<Mutex<ResponseWriter>>, f: impl FnOnce(&mut ResponseWriter) -> T) -> T {
    let mut guard = w.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

/// Iterates the app's result, sending the head before the first non-empty
/// chunk (or at the end for an empty body).
fn drive(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    state: &Arc<Mutex<Started>>,
    writer: &Arc<Mutex<ResponseWriter>>,
) -> PyResult<()> {
    // A list or tuple of bytes has a known length: send Content-Length
    // instead of chunking (Flask, Django and most apps return one).
    let sequence = iterable.is_instance_of::<PyList>() || iterable.is_instance_of::<PyTuple>();
    let known_len = if sequence {
        let mut total = 0u64;
        let mut all_bytes = true;
        for item in iterable.try_iter()? {
            match item?.cast::<PyBytes>() {
                Ok(b) => total += b.as_bytes().len() as u64,
                Err(_) => all_bytes = false,
            }
        }
        all_bytes.then_some(total)
    } else {
        None
    };
    for item in iterable.try_iter()? {
        let item = item?;
        let Ok(chunk) = item.cast::<PyBytes>() else {
            return Err(PyTypeError::new_err(format!(
                "WSGI app yielded {}, not bytes",
                item.get_type().name()?
            )));
        };
        let data = chunk.as_bytes();
        if data.is_empty() {
            continue;
        }
        send_head_if_needed(py, state, writer, known_len)?;
        let broken = with(writer, |w| {
            w.body(py, data);
            if !sequence {
                // Generators stream: each chunk goes out as it is made.
                w.flush(py);
            }
            w.broken
        });
        if broken {
            // The client went away; stop producing. close() still runs.
            return Ok(());
        }
    }
    send_head_if_needed(py, state, writer, known_len.or(Some(0)))?;
    with(writer, |w| w.finish(py));
    Ok(())
}

fn send_head_if_needed(
    _py: Python<'_>,
    state: &Arc<Mutex<Started>>,
    writer: &Arc<Mutex<ResponseWriter>>,
    known_len: Option<u64>,
) -> PyResult<()> {
    let st = state.lock().unwrap_or_else(|p| p.into_inner());
    with(writer, |w| {
        if w.head_sent {
            return Ok(());
        }
        let Some(status) = &st.status else {
            return Err(PyRuntimeError::new_err(
                "the WSGI app returned a body without calling start_response()",
            ));
        };
        w.send_head(status, &st.headers, known_len);
        Ok(())
    })
}

/// The full traceback of a Python error, as Python would print it.
pub fn format_err(py: Python<'_>, e: &PyErr) -> String {
    py.import("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (e.get_type(py), e.value(py), e.traceback(py)),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| lines.concat())
        .unwrap_or_else(|_| e.to_string())
}
