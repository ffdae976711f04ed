//! `wsgi.errors` (to the error log) and `wsgi.file_wrapper`.

use pyo3::prelude::*;
use std::sync::Mutex;
use tracing::warn;

/// `wsgi.errors`: text written here goes to corral's error log, a line at a time.
#[pyclass(frozen)]
#[derive(Default)]
pub(super) struct ErrorLog {
    pub(super) pending: Mutex<String>,
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
pub(super) struct FileWrapper {
    pub(super) filelike: Py<PyAny>,
    pub(super) blksize: usize,
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
