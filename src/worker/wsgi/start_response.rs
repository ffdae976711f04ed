//! `start_response` and the legacy `write()` it returns (PEP 3333),
//! with the status and header checks gunicorn makes.

use super::super::response::ResponseWriter;
use super::{send_head_if_needed, with};
use crate::wire;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use std::sync::{Arc, Mutex};
use tracing::warn;

#[derive(Default)]
pub(super) struct Started {
    pub(super) status: Option<String>,
    pub(super) headers: Vec<(String, String)>,
}

/// The `start_response` callable handed to the app.
#[pyclass(frozen)]
pub(super) struct StartResponse {
    pub(super) state: Arc<Mutex<Started>>,
    pub(super) writer: Arc<Mutex<ResponseWriter>>,
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
pub(super) fn checked_status(status: &Bound<'_, PyAny>) -> PyResult<String> {
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
    final_status(&status)?;
    Ok(status)
}

/// A WSGI response ends the request, so its status must be final: an
/// informational one (1xx) would leave the client, and the edge, waiting
/// for the status still to come.
fn final_status(status: &str) -> PyResult<()> {
    match status[..3].parse::<u16>() {
        Ok(200..=599) => Ok(()),
        Ok(100..=199) => Err(PyValueError::new_err(format!(
            "status {status:?} is informational: a WSGI response needs a final status (200-599)"
        ))),
        _ => Err(PyValueError::new_err(format!(
            "status {status:?} is out of range: a WSGI response needs a status from 200 to 599"
        ))),
    }
}

/// PEP 3333: a list of (name, value) str tuples, values latin-1. The
/// app's hop-by-hop headers are dropped (framing is the server's job).
pub(super) fn checked_headers(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
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
        if wire::is_hop_by_hop(&lname) {
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
pub(super) struct Write {
    pub(super) state: Arc<Mutex<Started>>,
    pub(super) writer: Arc<Mutex<ResponseWriter>>,
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
