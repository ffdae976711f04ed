//! A request as the pool, the logs and `corral status` name it: what it
//! asks (`GET /path`) and its request id. Made once per request; clones
//! share it.

use crate::edge::request::RequestId;
use crate::wire::receipt::Receipt;
use pingora_proxy::Session;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Job {
    /// Method and raw path, e.g. `GET /search?q=x`.
    pub request: Arc<str>,
    pub id: RequestId,
    /// May wait ahead on a busy worker (`pool::fits_ahead`).
    pub fits_ahead: bool,
}

impl Job {
    pub fn of(session: &Session, id: &RequestId) -> Job {
        let req = session.req_header();
        let request = format!("{} {}", req.method, String::from_utf8_lossy(req.raw_path()));
        Job {
            request: request.into(),
            id: id.clone(),
            fits_ahead: true,
        }
    }

    /// The same request, carrying a body of `len` bytes.
    pub fn with_body(self, len: u64) -> Job {
        Job {
            fits_ahead: crate::edge::app::pool::fits_ahead(len),
            ..self
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (request {})", self.request, self.id)
    }
}

/// What a request cost, for the access log: its wait in the queue, its
/// time in the worker (taken to whole response in, or to the edge giving
/// up), the worker's pid, and its receipt (CPU, memory) when it sent one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Work {
    pub queue: Duration,
    pub app: Duration,
    pub worker: i32,
    pub receipt: Option<Receipt>,
}
