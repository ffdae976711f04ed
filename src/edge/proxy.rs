//! The edge's request path as pingora phases. Read top to bottom:
//!
//! 1. `early_request_filter`: per-connection settings (pipelining).
//! 2. `request_filter`: read the whole body (limits), take a worker from
//!    the pool (queue, 503), forward the request and relay the response.
//!    Everything is answered here, so pingora's own upstream phases never run.
//! 3. `logging`: the access log line.

use crate::edge::access_log;
use crate::edge::app::forward;
use crate::edge::app::pool::{Lease, Pool, Refused};
use crate::edge::app::request_body::{BodyError, RequestBody};
use crate::edge::app::upstream::{self, BodyReader, ExchangeError, Framing};
use crate::edge::files::{self, Served};
use crate::edge::reply::{self, After};
use crate::edge::state::{EdgeState, InFlight};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_proxy::{ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
use tracing::{error, warn};

pub struct Edge {
    /// Lifecycle, TLS facts, the access log: what the whole edge shares.
    pub state: Arc<EdgeState>,
    pub pool: Arc<Pool>,
    /// `[limits]` body size, body time and rate, per URL prefix.
    pub routes: crate::edge::admit::routes::Routes,
    /// `app.timeout`: from the moment a worker has the request until its
    /// whole response is in.
    pub timeout: Option<Duration>,
    pub status_fd: std::os::fd::RawFd,
    pub static_mounts: Vec<files::StaticMount>,
    pub compression: crate::config::schema::Compression,
    /// Memory (and temp files) for response bodies waiting for slow clients.
    pub buffers: crate::edge::app::response_buffer::Budget,
    pub limits: crate::config::schema::Limits,
    pub trusted: Vec<(std::net::IpAddr, u8)>,
}

/// `x-corral-request-id`: the edge's pid and a sequence number, written
/// out only when something (the app, a log line) needs it.
#[derive(Clone, Copy)]
struct RequestId(u32, u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}{:08x}", self.0, self.1)
    }
}

pub struct Ctx {
    started: Instant,
    request_id: RequestId,
    status: u16,
    retry_after: u64,
    /// The real client (after `trusted_proxies`) and scheme; set at the
    /// start of `request_filter`.
    client: Option<std::net::SocketAddr>,
    scheme: &'static str,
    /// The response body was cut short.
    incomplete: bool,
    /// Counts this request as in flight until the context is dropped.
    _in_flight: InFlight,
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        let (in_flight, pid, seq) = self.state.enter();
        Ctx {
            _in_flight: in_flight,
            started: Instant::now(),
            request_id: RequestId(pid, seq),
            status: 0,
            retry_after: 0,
            client: None,
            scheme: "http",
            incomplete: false,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        session.as_downstream_mut().set_pipelining_enabled(true);
        // pingora has already applied the client's wish (HTTP/1.0 closes
        // unless it asked for keep-alive, RFC 9112 §9.3); only a connection
        // that stays open gets our idle timeout.
        let stays_open = session
            .as_downstream()
            .as_http1()
            .is_none_or(|h1| h1.will_keepalive());
        if stays_open {
            session.set_keepalive(Some(self.limits.keepalive_timeout.0.as_secs().max(1)));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        (ctx.client, ctx.scheme) = forward::client_and_scheme(session, &self.trusted);
        let raw_head = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        if let Err((status, why)) =
            crate::proto::strict::check(session.req_header(), raw_head.as_deref(), &self.limits)
        {
            return self.refuse(session, ctx, status, why).await;
        }
        // `OPTIONS *` asks about the server, not a resource: the app would
        // get a PATH_INFO that is not a path (PEP 3333).
        if session.req_header().raw_path() == b"*" {
            return self.server_wide(session, ctx).await;
        }
        // WSGI has no WebSockets: say so, rather than hand the app a plain
        // GET it would answer as a page.
        if asks_for_websocket(session) {
            return self
                .refuse(
                    session,
                    ctx,
                    501,
                    "Not Implemented: this site's app speaks WSGI, which has no WebSocket support",
                )
                .await;
        }
        // `[[limits.route]]` and `[[static]]` both match on the decoded
        // path: decode it once, and only if either is configured.
        let decoded = if self.routes.is_empty() && self.static_mounts.is_empty() {
            Vec::new()
        } else {
            crate::proto::target::decode(session.req_header().uri.path().as_bytes())
        };
        let applied = self.routes.for_path(&decoded);
        if let Some(rate) = applied.rate {
            if let Some(Err(wait)) = ctx.client.map(|c| rate.check(c.ip())) {
                ctx.retry_after = wait;
                return self.refuse(session, ctx, 429, "Too Many Requests").await;
            }
        }
        if let Some(status) = crate::edge::admit::redirect::to_https(&self.state, session).await? {
            ctx.status = status;
            return Ok(true);
        }
        // Static files never reach Python (unless a mount falls back to the app).
        if let Some(mount) = files::find(&self.static_mounts, &decoded) {
            match files::serve(&self.state, session, mount, &decoded).await? {
                Served::Done(status) => {
                    ctx.status = status;
                    return Ok(true);
                }
                Served::Fallback => {}
            }
        }
        // A declared length over the limit is refused before reading a byte.
        let declared = crate::proto::strict::declared_length(session.req_header())
            .ok()
            .flatten();
        if declared.is_some_and(|n| n > applied.max_body) {
            return self.too_large(session, ctx, &applied).await;
        }
        match expectation(session) {
            Expectation::None => {}
            Expectation::Continue => session.write_continue_response().await?,
            Expectation::Unsupported => {
                return self
                    .refuse(
                        session,
                        ctx,
                        417,
                        "Expectation Failed: only 100-continue is supported",
                    )
                    .await
            }
        }
        let body_timeout = applied.body_timeout;
        session.set_read_timeout(Some(body_timeout));
        let read =
            tokio::time::timeout(body_timeout, RequestBody::read(session, applied.max_body)).await;
        let body = match read {
            Ok(Ok(b)) => b,
            // Two clocks, one meaning: the whole body, or its next piece,
            // took longer than body_timeout.
            Err(_) | Ok(Err(BodyError::TimedOut)) => {
                return self
                    .refuse(session, ctx, 408, "Request Timeout: the body took too long")
                    .await
            }
            Ok(Err(BodyError::TooLarge)) => return self.too_large(session, ctx, &applied).await,
            Ok(Err(BodyError::Client(e))) => {
                // The client broke off or sent a malformed body (bad chunk
                // sizes, missing CRLFs...): answer 400 if it is still there.
                tracing::debug!("request {}: bad or broken body: {e}", ctx.request_id);
                return self
                    .refuse(session, ctx, 400, "Bad Request: malformed body")
                    .await;
            }
            Ok(Err(BodyError::Io(e))) => {
                error!("cannot buffer a request body: {e}");
                return self
                    .refuse(session, ctx, 500, "Internal Server Error")
                    .await;
            }
        };
        let head = forward::request_head(
            session,
            &ctx.request_id.to_string(),
            body.len(),
            ctx.client,
            ctx.scheme,
        );
        let is_head = session.req_header().method == http::Method::HEAD;

        // Retry on another worker only while the app cannot have run.
        let mut avoid = Vec::new();
        let (lease, mut conn, resp, deadline) = loop {
            let lease = match self.pool.acquire(&avoid).await {
                Ok(l) => l,
                Err(Refused::QueueFull) => {
                    return self
                        .refuse(session, ctx, 503, "All workers are busy (queue full)")
                        .await
                }
                Err(Refused::Timeout) => {
                    return self
                        .refuse(session, ctx, 503, "All workers are busy (queue timeout)")
                        .await
                }
            };
            let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
            let result = match deadline {
                None => exchange(&lease, &head, &body, is_head).await,
                Some(d) => {
                    match tokio::time::timeout_at(d, exchange(&lease, &head, &body, is_head)).await
                    {
                        Ok(r) => r,
                        Err(_) => {
                            let what = request_summary(session, ctx.request_id);
                            report_timeout(
                                &self.pool,
                                self.status_fd,
                                lease.worker,
                                &what,
                                self.timeout,
                            );
                            return self
                                .refuse(session, ctx, 504, "Gateway Timeout: the app took too long")
                                .await;
                        }
                    }
                }
            };
            match result {
                Ok((conn, resp)) => break (lease, conn, resp, deadline),
                Err(ExchangeError::NotDelivered(e)) if avoid.len() < 8 => {
                    warn!(
                        "request {} not delivered to worker {}: {e}; retrying",
                        ctx.request_id, lease.worker
                    );
                    suspect(&self.pool, self.status_fd, lease.worker);
                    avoid.push(lease.worker);
                }
                Err(ExchangeError::NotDelivered(e)) => {
                    error!("request {} could not reach any worker: {e}", ctx.request_id);
                    return self.refuse(session, ctx, 502, "Bad Gateway").await;
                }
                Err(ExchangeError::EdgeOutOfFds(e)) => {
                    error!(
                        "request {}: the edge cannot open a connection to a worker: {e}; \
                         raise the file descriptor limit (systemd LimitNOFILE=, ulimit -n) \
                         or lower [limits] max_connections",
                        ctx.request_id
                    );
                    return self
                        .refuse(
                            session,
                            ctx,
                            503,
                            "Service Unavailable: server out of resources",
                        )
                        .await;
                }
                Err(ExchangeError::Failed(why)) => {
                    suspect(&self.pool, self.status_fd, lease.worker);
                    error!(
                        "request {} ({} {}) failed in worker {}: {why}",
                        ctx.request_id,
                        session.req_header().method,
                        String::from_utf8_lossy(session.req_header().raw_path()),
                        lease.worker
                    );
                    return self.refuse(session, ctx, 502, "Bad Gateway").await;
                }
            }
        };

        ctx.status = resp.status;
        let (header, mut sink) =
            crate::edge::app::relay::prepare(session, &self.compression, &resp)?;
        if resp.framing == Framing::Empty {
            if !resp.close {
                lease.put_conn(conn);
            }
            drop(lease);
            reply::header(&self.state, session, header, true).await?;
            return Ok(true);
        }
        // A body already sitting whole in our read buffer (small responses,
        // the common case) goes out at once: no task, no channel, and the
        // worker is released before the client write even starts.
        if let Framing::Length(n) = resp.framing {
            if conn.buffer().len() as u64 == n {
                let body = Bytes::copy_from_slice(conn.buffer());
                conn.consume(n as usize);
                if !resp.close {
                    lease.put_conn(conn);
                }
                drop(lease);
                reply::header(&self.state, session, header, false).await?;
                sink.whole(session, body).await?;
                return Ok(true);
            }
        }
        reply::header(&self.state, session, header, false).await?;

        // Read the worker's body in its own task into the response buffer
        // (memory, then a temp file), so the worker is free once its
        // response is in, whatever the client's speed. If the client goes
        // away the task stops reading, which the app sees as a broken
        // connection.
        let (writer, mut reader) = crate::edge::app::response_buffer::channel(&self.buffers);
        let relay = BodyRelay {
            framing: resp.framing,
            reusable: !resp.close,
            deadline,
            pool: self.pool.clone(),
            status_fd: self.status_fd,
            timeout: self.timeout,
            what: request_summary(session, ctx.request_id),
        };
        tokio::spawn(relay.run(lease, conn, writer));
        while let Some(piece) = reader.next().await {
            match piece {
                Ok(data) => sink.send(session, data).await?,
                Err(e) => {
                    error!("request {}: {e}", ctx.request_id);
                    ctx.incomplete = true;
                    // Cut the client off: a truncated body must not look complete.
                    return Err(Error::explain(ErrorType::ReadError, e.to_string()));
                }
            }
        }
        sink.end(session).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // Never reached: request_filter answers every request.
        Err(Error::explain(
            ErrorType::InternalError,
            "no upstream peer in corral's edge",
        ))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if !self.state.log.enabled() {
            return;
        }
        let req = session.req_header();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(if ctx.status != 0 {
                ctx.status
            } else if e.is_some() {
                400
            } else {
                0
            });
        // Requests pingora refused before request_filter have no ctx.client.
        let client = ctx
            .client
            .or_else(|| forward::client_and_scheme(session, &self.trusted).0)
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let header = |name: http::header::HeaderName| {
            req.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        self.state.log.log(&access_log::Entry {
            client: &client,
            method: req.method.as_str(),
            target: &String::from_utf8_lossy(req.raw_path()),
            protocol: forward::protocol(req.version),
            status,
            bytes: session.body_bytes_sent(),
            referer: &header(http::header::REFERER),
            user_agent: &header(http::header::USER_AGENT),
            duration: ctx.started.elapsed(),
            request_id: &ctx.request_id.to_string(),
            complete: !ctx.incomplete && e.is_none(),
        });
    }
}

impl Edge {
    /// `OPTIONS *` (the server's own capabilities) gets 200 with `Allow`;
    /// any other method on `*` is malformed.
    async fn server_wide(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if session.req_header().method != http::Method::OPTIONS {
            return self
                .refuse(session, ctx, 400, "Bad Request: '*' is only for OPTIONS")
                .await;
        }
        ctx.status = 200;
        let allow = [("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")];
        reply::text(&self.state, session, 200, "", &allow, After::KeepAlive).await?;
        Ok(true)
    }

    /// 413, naming the limit and the key that sets it, for the client and
    /// in the error log (an operator raising a limit needs the key).
    async fn too_large(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        applied: &crate::edge::admit::routes::Applied<'_>,
    ) -> Result<bool> {
        let key = match applied.max_body_route {
            Some(path) => format!("max_body of the [[limits.route]] with path = \"{path}\""),
            None => "[limits] max_body".to_string(),
        };
        let msg = format!(
            "Request body too large: the limit is {} bytes (set by {key})",
            applied.max_body
        );
        tracing::info!("{}: {msg}", request_summary(session, ctx.request_id));
        self.refuse(session, ctx, 413, &msg).await?;
        drain_h2_upload(session).await;
        Ok(true)
    }

    /// Answers from the edge itself (413, 502, 503...).
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        msg: &str,
    ) -> Result<bool> {
        ctx.status = status;
        let retry_after = match status {
            503 => Some("1".to_string()),
            429 => Some(ctx.retry_after.max(1).to_string()),
            _ => None,
        };
        let extra: Vec<(&'static str, &str)> = retry_after
            .iter()
            .map(|v| ("Retry-After", v.as_str()))
            .collect();
        // 503 and 504 come after the whole request was read; the others
        // may leave some of it unread.
        let after = match status {
            503 | 504 => After::KeepAlive,
            _ => After::Close,
        };
        reply::text(
            &self.state,
            session,
            status,
            format!("{msg}\n"),
            &extra,
            after,
        )
        .await?;
        Ok(true)
    }
}

/// h2's lingering close: the rest of a refused upload is read (granting
/// flow-control credit) and dropped for as long as h1 lingers. Some clients
/// (httpx) wait for credit before they read the answer, so a reset right
/// after the 413 would leave them hanging; once the time is up, h2 resets
/// the stream with NO_ERROR (RFC 9113 §8.1).
async fn drain_h2_upload(session: &mut Session) {
    if !session.is_http2() {
        return;
    }
    let deadline = tokio::time::Instant::now() + crate::edge::conn::guard::UPLOAD_LINGER;
    while let Ok(Ok(Some(_))) = tokio::time::timeout_at(deadline, session.read_request_body()).await
    {
    }
}

/// Reads a worker's response body into the response buffer, then gives
/// the connection back to the pool (or drops it).
struct BodyRelay {
    framing: Framing,
    reusable: bool,
    /// `app.timeout`, counted from when the worker got the request; then
    /// from each piece of the body.
    deadline: Option<tokio::time::Instant>,
    pool: Arc<Pool>,
    status_fd: std::os::fd::RawFd,
    timeout: Option<Duration>,
    what: String,
}

impl BodyRelay {
    async fn run(
        self,
        lease: Lease,
        mut conn: crate::edge::app::pool::Conn,
        writer: crate::edge::app::response_buffer::Writer,
    ) {
        let mut reader = BodyReader::new(self.framing);
        let mut deadline = self.deadline;
        loop {
            let next = match deadline {
                None => reader.next(&mut conn).await,
                Some(d) => match tokio::time::timeout_at(d, reader.next(&mut conn)).await {
                    Ok(r) => r,
                    Err(_) => {
                        report_timeout(
                            &self.pool,
                            self.status_fd,
                            lease.worker,
                            &self.what,
                            self.timeout,
                        );
                        writer.fail(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "app.timeout passed while the app was still sending its body",
                        ));
                        return;
                    }
                },
            };
            match next {
                Ok(Some(chunk)) => {
                    // gunicorn's rule: a worker that keeps sending is alive,
                    // so a streamed response gets app.timeout per piece,
                    // not for its whole length.
                    deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
                    if !writer.push(chunk).await {
                        return; // client gone: drop conn and lease
                    }
                }
                Ok(None) => break,
                Err(e) => return writer.fail(e),
            }
        }
        writer.end();
        if self.reusable && reader.is_done() {
            lease.put_conn(conn);
        }
    }
}

/// An HTTP/1.1 `Upgrade: websocket` request.
fn asks_for_websocket(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get_all(http::header::UPGRADE)
        .iter()
        .any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
}

/// What the client's `Expect` header asks of us (RFC 9110 §10.1.1).
enum Expectation {
    None,
    /// Send `100 Continue`: the body is going to be read.
    Continue,
    Unsupported,
}

fn expectation(session: &Session) -> Expectation {
    let req = session.req_header();
    // An HTTP/1.0 client cannot read a 1xx: the header is ignored.
    if req.version == http::Version::HTTP_10 || req.version == http::Version::HTTP_09 {
        return Expectation::None;
    }
    match req.headers.get(http::header::EXPECT) {
        None => Expectation::None,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"100-continue") => Expectation::Continue,
        Some(_) => Expectation::Unsupported,
    }
}

/// A worker just failed an exchange: most likely it is dead, and the master
/// will say so shortly. Until then, send it nothing more; the master puts
/// it back (`up` again) if it turns out to be alive.
fn suspect(pool: &Pool, status_fd: std::os::fd::RawFd, worker: u64) {
    pool.worker_down(worker);
    crate::ipc::send_status(status_fd, &crate::ipc::Status::Suspect(worker));
}

/// `GET /path (request 0a1b…)`: how logs name a request.
fn request_summary(session: &Session, request_id: RequestId) -> String {
    let req = session.req_header();
    format!(
        "{} {} (request {request_id})",
        req.method,
        String::from_utf8_lossy(req.raw_path())
    )
}

/// A request overran `app.timeout`: its worker gets no more requests here,
/// and the master dumps the worker's Python stacks and replaces it.
fn report_timeout(
    pool: &Pool,
    status_fd: std::os::fd::RawFd,
    worker: u64,
    what: &str,
    timeout: Option<Duration>,
) {
    error!(
        "{what} timed out after {:?} in worker {worker}; the worker will be replaced",
        timeout.unwrap_or_default()
    );
    pool.worker_down(worker);
    crate::ipc::send_status(
        status_fd,
        &crate::ipc::Status::Timeout(worker, what.to_string()),
    );
}

/// One request/response head exchange with a worker, on a pooled or new connection.
async fn exchange(
    lease: &Lease,
    head: &[u8],
    body: &RequestBody,
    is_head: bool,
) -> std::result::Result<(crate::edge::app::pool::Conn, upstream::ResponseHead), ExchangeError> {
    let mut conn = match lease.take_conn() {
        Some(c) => c,
        None => {
            let stream =
                tokio::time::timeout(Duration::from_secs(5), UnixStream::connect(&lease.socket))
                    .await
                    .map_err(|_| ExchangeError::NotDelivered(std::io::ErrorKind::TimedOut.into()))?
                    .map_err(ExchangeError::from_connect)?;
            BufReader::with_capacity(upstream::READ_CHUNK, stream)
        }
    };
    upstream::send(&mut conn, head, body).await?;
    let resp = upstream::read_head(&mut conn, is_head).await?;
    Ok((conn, resp))
}
