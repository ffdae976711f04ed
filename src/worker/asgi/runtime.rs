//! `rt`: what the Python side of the ASGI server calls into. Everything
//! here runs on the loop's thread with the GIL held, and is quick.

use super::framer::{error_response, AsgiFramer};
use super::watchdog::Heartbeat;
use crate::worker::recycle::Recycle;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyType};
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[pyclass(frozen, name = "Runtime")]
pub struct Runtime {
    pub recycle: Arc<Recycle>,
    pub heartbeat: Arc<Heartbeat>,
    /// `[app] root_path`, every scope's `root_path`.
    pub root_path: Py<PyString>,
}

#[pymethods]
impl Runtime {
    fn parse_head(
        &self,
        py: Python<'_>,
        head: &[u8],
        state: &Bound<'_, PyDict>,
    ) -> PyResult<super::scope::Parsed> {
        super::scope::parse_head(py, head, state, self.root_path.bind(py))
    }

    #[getter(Framer)]
    fn framer_type<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        py.get_type::<AsgiFramer>()
    }

    #[getter(WebSocket)]
    fn websocket_type<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        py.get_type::<super::websocket::WebSocket>()
    }

    /// A `103 Early Hints` head for these links.
    fn early_hints<'py>(
        &self,
        py: Python<'py>,
        links: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &super::framer::early_hints(links)?))
    }

    fn error_response<'py>(
        &self,
        py: Python<'py>,
        status: u16,
        keep_alive: bool,
    ) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &error_response(status, keep_alive))
    }

    /// Called by the serving loop every tick: the loop is alive.
    fn tick(&self) {
        self.heartbeat.beat();
        self.recycle.tick();
    }

    fn stopping(&self) -> bool {
        crate::worker::server::STOPPING.load(Ordering::SeqCst)
    }

    fn after_request(&self) {
        self.recycle.after_request();
    }

    fn log_error(&self, text: &str) {
        tracing::error!("{text}");
    }

    fn log_info(&self, text: &str) {
        tracing::info!("{text}");
    }

    fn log_debug(&self, text: &str) {
        tracing::debug!("{text}");
    }
}
