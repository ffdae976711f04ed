//! What the request path works with: `Edge`, the parts every request
//! shares (read-only once the edge runs), and `Ctx`, one request's own
//! facts, made by pingora for each request (`ProxyHttp::new_ctx`).

use crate::edge::app::pool::Pool;
use crate::edge::files;
use crate::edge::state::{EdgeState, InFlight};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Edge {
    /// Lifecycle, TLS facts, the access log: what the whole edge shares.
    pub state: Arc<EdgeState>,
    pub pool: Arc<Pool>,
    /// `[limits]` body size, body time and rate, per URL prefix.
    pub routes: crate::edge::admit::routes::Routes,
    /// `app.timeout`: from the moment a worker has the request until its
    /// whole response is in.
    pub timeout: Option<Duration>,
    /// `[app] retry_idempotent`: run an idempotent request once more when
    /// its worker went away before answering.
    pub retry_idempotent: bool,
    pub status_fd: std::os::fd::RawFd,
    /// Shared with the shortcut (`conn::shortcut`).
    pub static_mounts: Arc<[files::StaticMount]>,
    pub compression: crate::config::schema::Compression,
    /// Memory (and temp files) for response bodies waiting for slow clients.
    pub buffers: crate::edge::app::response_buffer::Budget,
    pub limits: crate::config::schema::Limits,
    /// `[server] health_path`; empty = none.
    pub health_path: String,
    /// `[app] root_path`: the app answers only under it; empty = everywhere.
    pub root_path: String,
    pub metrics: Arc<crate::edge::metrics::Metrics>,
    pub trusted: Vec<(std::net::IpAddr, u8)>,
    /// `[tls.acme]`: answers to the CA's HTTP-01 checks.
    pub acme: Option<Arc<crate::edge::acme::served::Served>>,
}

/// The request's id (logs, `X-Request-ID` to the app and echoed to the
/// client): the edge's pid and a sequence number, or the one a trusted
/// proxy in front gave (`forward::given_request_id`). Written out once,
/// since every response carries it; shared, not copied, by its users.
pub(crate) type RequestId = Arc<str>;

pub struct Ctx {
    pub(crate) started: Instant,
    /// The same moment by the wall clock, for `X-Request-Start`.
    pub(crate) received: std::time::SystemTime,
    pub(crate) request_id: RequestId,
    pub(crate) status: u16,
    pub(crate) retry_after: u64,
    /// The real client (after `trusted_proxies`) and scheme; set at the
    /// start of `request_filter`.
    pub(crate) client: Option<std::net::SocketAddr>,
    pub(crate) scheme: &'static str,
    /// The response body was cut short.
    pub(crate) incomplete: bool,
    /// The client left while its response streamed: not an error of ours.
    pub(crate) client_left: bool,
    /// What an app request cost (queue, worker time, the worker's receipt).
    pub(crate) work: Option<crate::edge::app::job::Work>,
    /// The body length the head declares, once `route` has checked it.
    pub(crate) declared_length: Option<u64>,
    /// What answered it, for the metrics (set by `Edge::act`).
    pub(crate) kind: crate::edge::metrics::Kind,
    /// An HTTP/1.1 WebSocket whose connection pingora handed over: its
    /// tunnel runs on, and logs, after this request ends (`app::handed_over`).
    pub(crate) handed_over: bool,
    /// Counts this request as in flight until the context is dropped (or
    /// its tunnel, which takes it, ends).
    in_flight: Option<InFlight>,
}

impl Ctx {
    /// The request's in-flight token, for what outlives its context.
    pub(crate) fn take_in_flight(&mut self) -> Option<InFlight> {
        self.in_flight.take()
    }

    pub fn new(state: &Arc<EdgeState>) -> Ctx {
        let (in_flight, pid, seq) = state.enter();
        Ctx {
            in_flight: Some(in_flight),
            handed_over: false,
            started: Instant::now(),
            request_id: request_id(pid, seq),
            received: std::time::SystemTime::now(),
            status: 0,
            retry_after: 0,
            client: None,
            scheme: "http",
            incomplete: false,
            client_left: false,
            work: None,
            declared_length: None,
            kind: Default::default(),
        }
    }
}

/// A request's id: the edge's pid and the request's number, as hex
/// (`{pid:08x}{seq:08x}`). Written digit by digit: it is made for every
/// request, and `format!` cost more than all the rest of `Ctx::new`.
fn request_id(pid: u32, seq: u64) -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if seq > u64::from(u32::MAX) {
        return format!("{pid:08x}{seq:08x}").into();
    }
    let both = (u64::from(pid) << 32) | seq;
    let mut digits = [0u8; 16];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((both >> (60 - 4 * i)) & 0xf) as usize];
    }
    match std::str::from_utf8(&digits) {
        Ok(id) => Arc::from(id),
        Err(_) => format!("{pid:08x}{seq:08x}").into(),
    }
}

/// The host the client named (Host, else the target's authority) without
/// its port; IPv6 literals keep their brackets.
pub(crate) fn host_name(req: &pingora_http::RequestHeader) -> &str {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_read_as_before() {
        for (pid, seq) in [
            (0, 0),
            (1, 2),
            (0xdead, 0xbeef),
            (u32::MAX, u64::from(u32::MAX)),
            (7, 1 << 40),
        ] {
            assert_eq!(&*super::request_id(pid, seq), format!("{pid:08x}{seq:08x}"));
        }
    }
}
