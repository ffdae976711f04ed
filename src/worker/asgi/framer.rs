//! `rt.Framer`: an ASGI response to the edge, checked and framed by
//! `wire::framer` (the WSGI worker's rules too).

use crate::wire::{self, framer::Framer};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PySequence};

#[pyclass(name = "Framer")]
pub struct AsgiFramer {
    framer: Framer,
    out: Vec<u8>,
}

#[pymethods]
impl AsgiFramer {
    #[new]
    fn new(head_request: bool, keep_alive: bool) -> Self {
        AsgiFramer {
            framer: Framer::new(head_request, keep_alive),
            out: Vec::with_capacity(1024),
        }
    }

    /// The head, then the first body bytes. `known_len` is the body's
    /// length when it all came in one message.
    fn head<'py>(
        &mut self,
        py: Python<'py>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        known_len: Option<u64>,
        body: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.start(status, headers, known_len, body)?;
        Ok(PyBytes::new(py, &self.out))
    }

    /// A whole response in one call (the head and its only body message):
    /// returns the bytes and whether the connection stays open.
    #[staticmethod]
    fn whole<'py>(
        py: Python<'py>,
        head_request: bool,
        keep_alive: bool,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        body: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, bool)> {
        let mut f = AsgiFramer::new(head_request, keep_alive);
        f.start(status, headers, Some(body.len() as u64), body)?;
        f.framer.finish(&mut f.out);
        Ok((PyBytes::new(py, &f.out), f.framer.keep_alive))
    }

    fn body<'py>(&mut self, py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
        self.out.clear();
        self.framer.body(&mut self.out, data);
        PyBytes::new(py, &self.out)
    }

    fn finish<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.out.clear();
        self.framer.finish(&mut self.out);
        PyBytes::new(py, &self.out)
    }

    /// Ends a chunked body with the app's trailers (`http.response.trailers`).
    fn finish_trailers<'py>(
        &mut self,
        py: Python<'py>,
        headers: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut fields = Vec::new();
        for item in headers.try_iter()? {
            let (name, value) = field(&item?)?;
            if wire::trailer_allowed(&String::from_utf8_lossy(&name).to_ascii_lowercase()) {
                fields.push((name, value));
            }
        }
        self.out.clear();
        self.framer.finish_with_trailers(&mut self.out, &fields);
        Ok(PyBytes::new(py, &self.out))
    }

    /// Body bytes still expected (None: chunked), for a file sent around
    /// the framer; `sent` counts them.
    fn expects(&self) -> Option<u64> {
        self.framer.expects()
    }

    fn sent(&mut self, n: u64) {
        self.framer.sent_around(n);
    }

    #[getter]
    fn keep_alive(&self) -> bool {
        self.framer.keep_alive
    }
}

impl AsgiFramer {
    /// Status line, checked fields, end of head, first body bytes into `out`.
    fn start(
        &mut self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        known_len: Option<u64>,
        body: &[u8],
    ) -> PyResult<()> {
        // Final statuses only: an informational one (1xx; early hints have
        // their own message) would leave the client waiting for the status
        // still to come.
        let status: u16 = status
            .extract()
            .ok()
            .filter(|s| (200..=599).contains(s))
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "invalid status {status}: a response needs a final status, an int from 200 to 599"
                ))
            })?;
        self.out.clear();
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("");
        let line = format!("{status} {reason}");
        self.framer
            .status_line(&mut self.out, status, line.trim_end().as_bytes());
        for item in headers.try_iter()? {
            let (name, value) = field(&item?)?;
            if wire::is_hop_by_hop(&String::from_utf8_lossy(&name).to_ascii_lowercase()) {
                tracing::warn!(
                    "app set hop-by-hop header {}; ignored",
                    String::from_utf8_lossy(&name)
                );
                continue;
            }
            self.framer.field(&mut self.out, &name, &value);
        }
        self.framer.end_head(&mut self.out, known_len);
        self.framer.body(&mut self.out, body);
        Ok(())
    }
}

/// One `[name, value]` pair of bytes, checked as the WSGI side checks.
pub(super) fn field(item: &Bound<'_, PyAny>) -> PyResult<(Vec<u8>, Vec<u8>)> {
    let pair = item
        .cast::<PySequence>()
        .ok()
        .filter(|p| p.len().ok() == Some(2))
        .ok_or_else(|| PyTypeError::new_err("each header must be a [name, value] pair of bytes"))?;
    let bytes = |i: usize| -> PyResult<Vec<u8>> {
        pair.get_item(i)?
            .cast::<PyBytes>()
            .map(|b| b.as_bytes().to_vec())
            .map_err(|_| PyTypeError::new_err("header names and values must be bytes"))
    };
    let (name, value) = (bytes(0)?, bytes(1)?);
    let name_ok = !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic() && *b != b':');
    if !name_ok || value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(PyValueError::new_err(format!(
            "invalid header {:?}: {:?} (names are tokens, values without CR/LF)",
            String::from_utf8_lossy(&name),
            String::from_utf8_lossy(&value)
        )));
    }
    if name.eq_ignore_ascii_case(b"content-length")
        && crate::proto::length::parse_one(value.trim_ascii()).is_none()
    {
        return Err(PyValueError::new_err(format!(
            "invalid Content-Length {:?}: must be a decimal number of bytes",
            String::from_utf8_lossy(&value)
        )));
    }
    Ok((name, value))
}

/// `103 Early Hints` with one `Link` field per link (ASGI's
/// `http.response.early_hint`), checked as response fields are.
pub fn early_hints(links: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut out = b"HTTP/1.1 103 Early Hints\r\n".to_vec();
    for link in links.try_iter()? {
        let link = link?;
        let value = link
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("early hint links must be bytes"))?
            .as_bytes();
        if value.is_empty() || value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(PyValueError::new_err(format!(
                "invalid early hint link {:?}",
                String::from_utf8_lossy(value)
            )));
        }
        out.extend_from_slice(b"Link: ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// A complete plain-text error response (a failed app, a bad head).
pub fn error_response(status: u16, keep_alive: bool) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("Error");
    let body = format!("{status} {reason}\n");
    let mut framer = Framer::new(false, keep_alive);
    let mut out = Vec::with_capacity(128);
    framer.status_line(&mut out, status, format!("{status} {reason}").as_bytes());
    framer.field(&mut out, b"Content-Type", b"text/plain; charset=utf-8");
    framer.end_head(&mut out, Some(body.len() as u64));
    framer.body(&mut out, body.as_bytes());
    framer.finish(&mut out);
    out
}
