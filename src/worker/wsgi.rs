//! PEP 3333 on top of a fully read request: builds the environ, provides
//! `start_response` / `write` / `wsgi.errors` / `wsgi.file_wrapper`, runs the
//! app and drives its iterable into a [`ResponseWriter`].
//!
//! Invariant: this runs on a Python thread with the GIL held; the only
//! blocking I/O (writes to the edge) happens inside `py.detach`. The app's
//! iterable always gets `close()` called, whatever happened.

use super::request::{Body, Request};
use super::response::ResponseWriter;
use crate::wire;
use pyo3::exceptions::{PyAssertionError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use tracing::{error, warn};

/// Per-process objects reused by every request.
pub struct Wsgi {
    app: Py<PyAny>,
    base_environ: Py<PyDict>,
    bytes_io: Py<PyAny>,
    io_open: Py<PyAny>,
}

/// What the edge told us about the connection, carried in `x-corral-*`
/// headers that it strips from client requests first.
#[derive(Default)]
struct EdgeInfo {
    client: Option<(String, String)>,
    local: Option<(String, String)>,
    scheme: Option<String>,
    protocol: Option<String>,
    request_id: Option<String>,
    client_cert: Option<String>,
    client_verified: bool,
}

impl Wsgi {
    pub fn new(py: Python<'_>, app: Py<PyAny>, threads: usize) -> PyResult<Self> {
        let base = PyDict::new(py);
        base.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
        base.set_item("wsgi.multithread", threads > 1)?;
        base.set_item("wsgi.multiprocess", true)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item("wsgi.errors", Py::new(py, ErrorLog::default())?)?;
        base.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        base.set_item("SCRIPT_NAME", "")?;
        base.set_item(
            "SERVER_SOFTWARE",
            format!("corral/{}", env!("CARGO_PKG_VERSION")),
        )?;
        let io = py.import("io")?;
        Ok(Wsgi {
            app,
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

    fn environ<'py>(&self, py: Python<'py>, req: Request) -> PyResult<Bound<'py, PyDict>> {
        let env = self.base_environ.bind(py).copy()?;
        set_target(&env, &req)?;
        let Fields {
            info,
            host,
            content_type,
            http,
        } = fields(&req);
        if let Some(ct) = content_type {
            env.set_item("CONTENT_TYPE", ct)?;
        }
        for (k, v) in http {
            env.set_item(k, v)?;
        }
        let body_len = req.body.len();
        if body_len > 0 || !matches!(req.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS") {
            env.set_item("CONTENT_LENGTH", body_len.to_string())?;
        }
        set_connection(&env, info, host)?;
        let input = match req.body {
            Body::Memory(v) => self.bytes_io.bind(py).call1((PyBytes::new(py, &v),))?,
            Body::File(f, _) => {
                let fd = f.into_raw_fd();
                self.io_open.bind(py).call1((fd, "rb"))?
            }
        };
        env.set_item("wsgi.input", input)?;
        Ok(env)
    }
}

/// REQUEST_METHOD, PATH_INFO (decoded, as latin-1), QUERY_STRING and the
/// raw target.
fn set_target(env: &Bound<'_, PyDict>, req: &Request) -> PyResult<()> {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (req.target.as_str(), ""),
    };
    let path = match path.split_once("://") {
        // Absolute-form targets (`http://host/path`) carry the path after
        // the authority; an origin-form path (starting with "/") is taken
        // as it is, even if it contains "://".
        Some((_, rest)) if !path.starts_with('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => path,
    };
    env.set_item("REQUEST_METHOD", &req.method)?;
    env.set_item("PATH_INFO", latin1(&percent_decode(path.as_bytes())))?;
    env.set_item("QUERY_STRING", query)?;
    env.set_item("REQUEST_URI", &req.target)?;
    env.set_item("RAW_URI", &req.target)?;
    Ok(())
}

/// The request's header fields, sorted for the environ.
struct Fields {
    /// What the edge told about the connection (`x-corral-*`).
    info: EdgeInfo,
    host: Option<String>,
    content_type: Option<String>,
    /// HTTP_* keys in arrival order; duplicates joined as PEP 3333 asks.
    http: Vec<(String, String)>,
}

fn fields(req: &Request) -> Fields {
    let mut f = Fields {
        info: EdgeInfo::default(),
        host: None,
        content_type: None,
        http: Vec::with_capacity(req.headers.len()),
    };
    for (name, value) in &req.headers {
        let lname = name.to_ascii_lowercase();
        let value = latin1(value);
        match lname.as_str() {
            wire::CLIENT => f.info.client = split_host_port(&value),
            wire::LOCAL => f.info.local = split_host_port(&value),
            wire::SCHEME => f.info.scheme = Some(value),
            wire::PROTOCOL => f.info.protocol = Some(value),
            wire::REQUEST_ID => f.info.request_id = Some(value),
            wire::CLIENT_CERT => {
                let utf8 = percent_encoding::percent_decode(value.as_bytes()).decode_utf8_lossy();
                f.info.client_cert = Some(utf8.into_owned());
            }
            wire::CLIENT_VERIFY => f.info.client_verified = value == "SUCCESS",
            "content-type" => f.content_type = Some(value),
            "content-length" => {}
            // Underscored names could spoof dashed ones (X_Forwarded_For
            // vs X-Forwarded-For both map to HTTP_X_FORWARDED_FOR): drop
            // them, as nginx and gunicorn do.
            _ if lname.contains('_') => {}
            _ => {
                if lname == "host" {
                    f.host = Some(value.clone());
                }
                let key = format!("HTTP_{}", lname.to_ascii_uppercase().replace('-', "_"));
                match f.http.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => {
                        v.push_str(if key == "HTTP_COOKIE" { "; " } else { ", " });
                        v.push_str(&value);
                    }
                    None => f.http.push((key, value)),
                }
            }
        }
    }
    f
}

/// REMOTE_*, SERVER_*, the scheme, TLS client certificates, the protocol
/// and the request id, from what the edge told.
fn set_connection(env: &Bound<'_, PyDict>, info: EdgeInfo, host: Option<String>) -> PyResult<()> {
    let (client_ip, client_port) = info.client.unwrap_or_default();
    env.set_item("REMOTE_ADDR", client_ip)?;
    env.set_item("REMOTE_PORT", client_port)?;
    let (local_ip, local_port) = info.local.unwrap_or_default();
    let server_name = host
        .as_deref()
        .and_then(|h| {
            split_host_port(h)
                .map(|(n, _)| n)
                .or_else(|| Some(h.to_string()))
        })
        .unwrap_or(local_ip);
    env.set_item("SERVER_NAME", server_name)?;
    env.set_item("SERVER_PORT", local_port)?;
    let scheme = info.scheme.unwrap_or_else(|| "http".into());
    if scheme == "https" {
        env.set_item("HTTPS", "on")?;
        // The names nginx (uwsgi_param) and Apache use for client certificates.
        if info.client_verified {
            env.set_item("SSL_CLIENT_VERIFY", "SUCCESS")?;
            env.set_item("SSL_CLIENT_S_DN", info.client_cert.unwrap_or_default())?;
        } else {
            env.set_item("SSL_CLIENT_VERIFY", "NONE")?;
        }
    }
    env.set_item("wsgi.url_scheme", scheme)?;
    env.set_item(
        "SERVER_PROTOCOL",
        info.protocol.unwrap_or_else(|| "HTTP/1.1".into()),
    )?;
    if let Some(id) = info.request_id {
        env.set_item("corral.request_id", id)?;
    }
    Ok(())
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

#[derive(Default)]
struct Started {
    status: Option<String>,
    headers: Vec<(String, String)>,
}

/// The `start_response` callable handed to the app.
#[pyclass(frozen)]
struct StartResponse {
    state: Arc<Mutex<Started>>,
    writer: Arc<Mutex<ResponseWriter>>,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        let head_sent = with(&self.writer, |w| w.head_sent);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match exc_info {
            None if st.status.is_some() => {
                return Err(PyAssertionError::new_err(
                    "start_response() called a second time without exc_info",
                ))
            }
            Some(info) if head_sent => {
                // PEP 3333: too late to change the response; re-raise.
                let value = info.get_item(1)?;
                let tb = info.get_item(2)?;
                let err = PyErr::from_value(value.call_method1("with_traceback", (tb,))?);
                return Err(err);
            }
            _ => {}
        }
        let status = checked_status(status)?;
        let out = checked_headers(headers)?;
        st.status = Some(status);
        st.headers = out;
        let _ = py;
        Ok(Write {
            state: self.state.clone(),
            writer: self.writer.clone(),
        })
    }
}

/// PEP 3333: a str like '200 OK'.
fn checked_status(status: &Bound<'_, PyAny>) -> PyResult<String> {
    let status: String = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("status must be a str like '200 OK'"))?
        .to_str()?
        .to_owned();
    let valid = status.len() >= 4
        && status.as_bytes()[..3].iter().all(u8::is_ascii_digit)
        && status.as_bytes()[3] == b' '
        && !status.contains(['\r', '\n']);
    if !valid {
        return Err(PyValueError::new_err(format!(
            "invalid status {status:?}: it must be a str like '200 OK'"
        )));
    }
    Ok(status)
}

/// PEP 3333: a list of (name, value) str tuples, values latin-1. The
/// app's hop-by-hop headers are dropped (framing is the server's job).
fn checked_headers(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let list = headers
        .cast::<PyList>()
        .map_err(|_| PyTypeError::new_err("headers must be a list of (name, value) tuples"))?;
    let mut out = Vec::with_capacity(list.len());
    for item in list.iter() {
        let pair = item
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "each header must be a (name, value) tuple",
            ));
        }
        let name: String = pair
            .get_item(0)?
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("header names must be str"))?
            .to_str()?
            .to_owned();
        let value: String = pair
            .get_item(1)?
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("value of header {name} must be str")))?
            .to_str()?
            .to_owned();
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            || value.contains(['\r', '\n', '\0'])
            || value.chars().any(|c| c as u32 > 255)
        {
            return Err(PyValueError::new_err(format!(
                "invalid header {name:?}: {value:?} (names are tokens, values latin-1 without CR/LF)"
            )));
        }
        // Framing is the server's job (PEP 3333 hop-by-hop rule).
        let lname = name.to_ascii_lowercase();
        if wire::is_hop_by_hop(&lname) && lname != "content-length" {
            warn!("app set hop-by-hop header {name}; ignored");
            continue;
        }
        // A length that is not a number would break the framing to the
        // edge: the app's error (a 500 with this ValueError, as under
        // gunicorn), not a broken worker.
        if lname == "content-length"
            && crate::proto::length::parse_one(value.trim().as_bytes()).is_none()
        {
            return Err(PyValueError::new_err(format!(
                "invalid Content-Length {value:?}: must be a decimal number of bytes"
            )));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// The legacy `write()` callable returned by start_response.
#[pyclass(frozen)]
struct Write {
    state: Arc<Mutex<Started>>,
    writer: Arc<Mutex<ResponseWriter>>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        // Unknown total length: the head says chunked.
        send_head_if_needed(py, &self.state, &self.writer, None)?;
        with(&self.writer, |w| {
            w.body(py, data.as_bytes());
            w.flush(py);
        });
        Ok(())
    }
}

/// `wsgi.errors`: text written here goes to corral's error log, a line at a time.
#[pyclass(frozen)]
#[derive(Default)]
struct ErrorLog {
    pending: Mutex<String>,
}

#[pymethods]
impl ErrorLog {
    fn write(&self, s: &str) -> usize {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.push_str(s);
        while let Some(nl) = p.find('\n') {
            let line: String = p.drain(..=nl).collect();
            warn!("[wsgi.errors] {}", line.trim_end());
        }
        s.len()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(line?.extract::<&str>()?);
        }
        Ok(())
    }

    fn flush(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !p.is_empty() {
            warn!("[wsgi.errors] {}", p.trim_end());
            p.clear();
        }
    }
}

/// `wsgi.file_wrapper`: iterates a file-like object in blocks.
#[pyclass(frozen)]
struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=65536))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok(if data.is_truthy()? { Some(data) } else { None })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
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

/// Header bytes as a Python str, one char per byte (PEP 3333's latin-1 rule).
fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

fn percent_decode(b: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(b).collect()
}

/// `"1.2.3.4:80"` or `"[::1]:80"` into host and port.
fn split_host_port(s: &str) -> Option<(String, String)> {
    let (host, port) = s.rsplit_once(':')?;
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.is_empty() {
        return None;
    }
    if host.contains(':') && !host.starts_with('[') {
        return None; // a bare IPv6 address without a port
    }
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_to_latin1() {
        assert_eq!(latin1(&percent_decode(b"/caf%C3%A9")), "/caf\u{c3}\u{a9}");
        assert_eq!(latin1(&percent_decode(b"/a%2Fb%zz")), "/a/b%zz");
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            split_host_port("[::1]:80"),
            Some(("::1".into(), "80".into()))
        );
        assert_eq!(
            split_host_port("example.com:8080"),
            Some(("example.com".into(), "8080".into()))
        );
        assert_eq!(split_host_port("example.com"), None);
        assert_eq!(split_host_port("::1"), None);
    }
}
