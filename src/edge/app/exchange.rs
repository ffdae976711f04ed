//! Getting a request to a worker and its response head back: a worker from
//! the pool (queue, 503), the request written over its Unix socket, the
//! head read within `app.timeout`. A request is retried on another worker
//! while the app cannot have run it (not delivered), and an idempotent one
//! runs once more elsewhere if its worker went away before answering.

use crate::edge::app::ahead::{self, Back, Turned};
use crate::edge::app::body_rest::{self, BodyRest};
use crate::edge::app::job::Job;
use crate::edge::app::pool::{Conn, Lease, Order, Pool, Refused, Turn};
use crate::edge::app::request_body::RequestBody;
use crate::edge::app::upstream::{self, ExchangeError, ResponseHead};
use crate::edge::request::{Ctx, Edge};
use crate::ipc::Status;
use pingora_core::Result;
use pingora_proxy::Session;
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tracing::{debug, error, warn};

/// One request as it goes to a worker, the same for every attempt.
pub(super) struct Outgoing<'a> {
    head: &'a [u8],
    body: &'a RequestBody,
    /// HEAD: the answer has no body whatever its framing says.
    pub(super) is_head: bool,
    /// What it asks and its id: for the log and `corral status`.
    pub(super) what: Job,
    /// GET, HEAD, OPTIONS, TRACE, PUT, DELETE: running it twice does what
    /// running it once does (RFC 9110 §9.2.2).
    idempotent: bool,
}

/// How many workers a request that never reached its app may be sent to.
/// Sending it again is always safe; the bound is for a pool that keeps
/// dying under it: while a request that kills its workers is retried (an
/// ASGI worker takes many requests at once, so each death resets a few),
/// 8 ran out for requests that had done nothing wrong.
const MAX_UNDELIVERED: usize = 32;

/// What earlier attempts of a request did, which bounds trying again.
#[derive(Clone, Copy, Default)]
pub(super) struct Tries {
    /// Workers tried before this one.
    workers: usize,
    /// It already ran once more after a worker went away.
    reran: bool,
}

/// A worker's answer: its head read, its body still on `conn`.
pub struct Answer {
    pub lease: Lease,
    pub conn: Conn,
    pub resp: ResponseHead,
    /// The request body's part not yet written (the app answered first).
    pub rest: Option<BodyRest>,
    pub job: Job,
    /// When `app.timeout` runs out for the rest of the response.
    pub deadline: Option<tokio::time::Instant>,
}

/// How one attempt went. (Moved once, straight out of `attempt`: boxing
/// the large variant would cost an allocation per request.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Attempt {
    Answered(Answer),
    /// Not delivered: the app cannot have run it; try another worker.
    Retry(u64),
    /// Its worker went away before answering; an idempotent request runs
    /// once more on another.
    Rerun(u64),
    /// Taken back unrun from a busy worker, to run on this free one.
    Moved(Lease),
    /// Taken back unrun from this busy worker, to queue again at the front.
    Requeue(Requeued),
    /// Answered here with this status and reason.
    Refuse(u16, &'static str),
    /// The client closed its connection first.
    ClientGone(Box<pingora_core::Error>),
}

/// A request taken back from a busy worker to queue again.
pub(super) struct Requeued {
    worker: u64,
    /// The queue's time limit, counted from its first ask.
    give_up: Instant,
    /// How long it has waited so far, in the queue and ahead.
    queued: Duration,
}

/// Resolves when the client goes away (FIN or reset on HTTP/1, a reset
/// stream on h2); never for a client that waits.
pub(super) async fn client_gone(session: &mut Session) -> Box<pingora_core::Error> {
    tokio::time::sleep(WATCH_CLIENT_AFTER).await;
    loop {
        // The body is read: this only returns on a close (or, for bytes
        // of a pipelined next request, stays pending).
        if let Err(e) = session.as_downstream_mut().read_body_or_idle(true).await {
            return e;
        }
    }
}

/// How long a request waits for its worker before the edge starts
/// watching its client: nearly every request is answered sooner, and those
/// pay nothing for the watch (one read per request otherwise).
const WATCH_CLIENT_AFTER: Duration = Duration::from_millis(50);

impl Edge {
    /// None: the request was answered here (503, 502, 504).
    pub(crate) async fn dispatch(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        head: &[u8],
        body: &RequestBody,
        websocket: bool,
    ) -> Result<Option<Answer>> {
        let out = Outgoing {
            head,
            body,
            is_head: session.req_header().method == http::Method::HEAD,
            what: Job::of(session, &ctx.request_id).with_body(body.len()),
            // A WebSocket handshake (a GET, or over h2 an extended CONNECT)
            // is in the app's hands alone until it is answered.
            idempotent: session.req_header().method.is_idempotent() || websocket,
        };
        let mut avoid = Vec::new();
        let mut moved = None;
        let mut recalled = None;
        let mut reran = false;
        loop {
            // A client that leaves while its request waits for a worker
            // takes the request with it: it never reaches the app.
            let acquiring = self.acquire(moved.take(), recalled.take(), &avoid, &out, websocket);
            let acquired = tokio::select! {
                // Most requests find a worker at once, and then the watch
                // is never polled (no timer is set).
                biased;
                a = acquiring => a,
                e = client_gone(session), if !websocket => {
                    ctx.status = 499;
                    debug!("{}: the client went away while its request was queued: {e}", out.what);
                    return Err(e);
                }
            };
            let lease = match acquired {
                Ok(l) => l,
                Err(Refused::NoRoomForSocket) => {
                    let why = "Service Unavailable: no room for another WebSocket";
                    return self.refused(session, ctx, 503, why).await;
                }
                Err(Refused::QueueFull) => {
                    let why = "All workers are busy (queue full)";
                    return self.refused(session, ctx, 503, why).await;
                }
                Err(Refused::Timeout) => {
                    let why = match self.pool.any_worker_up(&[]) {
                        true => "All workers are busy (queue timeout)",
                        false => "Service Unavailable: no worker is up (queue timeout)",
                    };
                    return self.refused(session, ctx, 503, why).await;
                }
            };
            // For the access log if the answer never comes (504, 499).
            let begun = lease.begun();
            let tries = Tries {
                workers: avoid.len(),
                reran,
            };
            let attempt = self.attempt(ctx, lease, &out, tries);
            // Not for a WebSocket handshake: its client may already be
            // sending frames, and the watch would read (and lose) one of
            // their bytes. One that left is found when the 101 is written.
            let outcome = tokio::select! {
                a = attempt => a,
                e = client_gone(session), if !websocket => Attempt::ClientGone(e),
            };
            let outcome = match outcome {
                Attempt::Answered(a) if a.is_hint() => {
                    let hint = Attempt::Answered(a);
                    Box::pin(self.past_hints(session, ctx, &out, hint)).await?
                }
                other => other,
            };
            match outcome {
                Attempt::Answered(a) => return Ok(Some(a)),
                Attempt::Retry(worker) => avoid.push(worker),
                Attempt::Rerun(worker) => {
                    avoid.push(worker);
                    reran = true;
                }
                Attempt::Moved(lease) => moved = Some(lease),
                Attempt::Requeue(requeued) => {
                    // Not straight back behind the same slow request.
                    avoid.push(requeued.worker);
                    recalled = Some(requeued);
                }
                Attempt::Refuse(status, why) => {
                    ctx.work = Some(begun.work());
                    return self.refused(session, ctx, status, why).await;
                }
                Attempt::ClientGone(e) => {
                    ctx.work = Some(begun.work());
                    // nginx's 499: the client closed before the answer. The
                    // worker's connection is dropped, which cancels the
                    // request's task on an ASGI worker.
                    ctx.status = 499;
                    debug!("{}: the client went away while the app ran: {e}", out.what);
                    return Err(e);
                }
            }
        }
    }

    /// A worker for the request: the one it was moved to, the front of the
    /// queue for one taken back from a busy worker, or its turn in the
    /// queue (a WebSocket never queues).
    async fn acquire(
        &self,
        moved: Option<Lease>,
        recalled: Option<Requeued>,
        avoid: &[u64],
        out: &Outgoing<'_>,
        websocket: bool,
    ) -> std::result::Result<Lease, Refused> {
        if let Some(lease) = moved {
            return Ok(lease);
        }
        if let Some(Requeued {
            give_up, queued, ..
        }) = recalled
        {
            let mut lease = self.pool.reacquire(avoid, &out.what, give_up).await?;
            lease.queued_before(queued);
            return Ok(lease);
        }
        match websocket {
            true => self.pool.acquire_socket_soon(avoid, &out.what).await,
            false => self.pool.acquire(avoid, &out.what).await,
        }
    }

    /// Answered here, not by the app. Boxed, as rare: this future is
    /// built and copied for every request, at the size of its largest
    /// state.
    async fn refused(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        why: &str,
    ) -> Result<Option<Answer>> {
        Box::pin(self.refuse(session, ctx, status, why))
            .await
            .map(|_| None)
    }

    /// One exchange with the worker `lease` holds, under `app.timeout`.
    async fn attempt(
        &self,
        ctx: &Ctx,
        mut lease: Lease,
        out: &Outgoing<'_>,
        tries: Tries,
    ) -> Attempt {
        let order = lease.take_order();
        // Boxed: built for every request, and the futures around it
        // (dispatch, serve_app, act, pingora's request) would each carry
        // and copy its ~3 KiB.
        let exchanged = Box::pin(exchange(&lease, out, order));
        let Some(result) = self.in_time(&lease, exchanged).await else {
            report_timeout(&self.pool, self.status_fd, &lease, &out.what, self.timeout);
            return Attempt::Refuse(504, "Gateway Timeout: the app took too long");
        };
        match result {
            Ok(Exchanged::Head(conn, resp, rest)) => {
                let deadline = self.timeout.map(|t| (lease.begun().taken() + t).into());
                Attempt::Answered(Answer {
                    lease,
                    conn,
                    resp,
                    rest,
                    job: out.what.clone(),
                    deadline,
                })
            }
            Ok(Exchanged::Withdrawn(Back::Run(mut free))) => {
                free.queued_before(lease.begun().work().queue);
                Attempt::Moved(free)
            }
            Ok(Exchanged::Withdrawn(Back::Requeue)) => Attempt::Requeue(Requeued {
                worker: lease.worker,
                give_up: lease.queue_deadline(),
                queued: lease.begun().work().queue,
            }),
            Ok(Exchanged::Withdrawn(Back::QueueTimeout)) => {
                Attempt::Refuse(503, "All workers are busy (queue timeout)")
            }
            Err(e) => self.failed(ctx, out, lease.worker, e, tries),
        }
    }

    /// `fut` under `app.timeout`, counted from when the request began
    /// running: a request sent ahead is not timed while it waits its turn.
    /// None: out of time.
    async fn in_time<F: std::future::Future>(&self, lease: &Lease, fut: F) -> Option<F::Output> {
        let Some(limit) = self.timeout else {
            return Some(fut.await);
        };
        tokio::pin!(fut);
        let mut deadline = lease.taken() + limit;
        loop {
            match tokio::time::timeout_at(deadline.into(), &mut fut).await {
                Ok(done) => return Some(done),
                Err(_) => match lease.turn() {
                    Turn::Began(at) if at + limit > Instant::now() => deadline = at + limit,
                    Turn::Began(_) => return None,
                    Turn::Waiting => deadline = Instant::now() + limit,
                },
            }
        }
    }

    /// What a failed exchange means, told in the log.
    pub(super) fn failed(
        &self,
        ctx: &Ctx,
        out: &Outgoing<'_>,
        worker: u64,
        e: ExchangeError,
        tries: Tries,
    ) -> Attempt {
        let what = &out.what;
        match e {
            ExchangeError::Withdrawn => {
                debug!(
                    "request {}: worker {worker} gave it back unrun",
                    ctx.request_id
                );
                Attempt::Retry(worker)
            }
            ExchangeError::NotDelivered(e) if tries.workers < MAX_UNDELIVERED => {
                warn!(
                    "request {} not delivered to worker {worker}: {e}; retrying",
                    ctx.request_id
                );
                suspect(&self.pool, self.status_fd, worker, Status::Suspect);
                Attempt::Retry(worker)
            }
            ExchangeError::NotDelivered(e) => {
                error!("request {} could not reach any worker: {e}", ctx.request_id);
                Attempt::Refuse(502, "Bad Gateway")
            }
            ExchangeError::EdgeOutOfFds(e) => {
                error!(
                    "request {}: the edge cannot open a connection to a worker: {e}; \
                     raise the file descriptor limit (systemd LimitNOFILE=, ulimit -n) \
                     or lower [limits] max_connections",
                    ctx.request_id
                );
                Attempt::Refuse(503, "Service Unavailable: server out of resources")
            }
            ExchangeError::Vanished(why) => self.vanished(out, worker, why, tries),
            ExchangeError::Failed(why) => {
                suspect(&self.pool, self.status_fd, worker, Status::Suspect);
                error!("{what} failed in worker {worker}: {why}");
                Attempt::Refuse(502, "Bad Gateway")
            }
        }
    }

    /// The worker went away with the request before answering (kill -9,
    /// the OOM killer, a crash): nothing reached the client yet, so an
    /// idempotent request runs once more on another worker, as nginx's
    /// `proxy_next_upstream` does. Only once, so a request that kills its
    /// worker takes down two at most.
    fn vanished(&self, out: &Outgoing<'_>, worker: u64, why: String, tries: Tries) -> Attempt {
        // The edge's word lets the master tell this death from a crash loop.
        suspect(&self.pool, self.status_fd, worker, Status::Vanished);
        let what = &out.what;
        match self.why_not_again(out, tries) {
            None => {
                warn!(
                    "{what}: worker {worker} went away before answering: {why}; \
                     running it once more on another worker (its method is idempotent)"
                );
                Attempt::Rerun(worker)
            }
            Some(why_not) => {
                error!("{what} failed in worker {worker}: {why}; {why_not}");
                Attempt::Refuse(502, "Bad Gateway")
            }
        }
    }

    /// Why a request whose worker went away is not run again, if it is not.
    fn why_not_again(&self, out: &Outgoing<'_>, tries: Tries) -> Option<&'static str> {
        if !self.retry_idempotent {
            Some("not run again ([app] retry_idempotent = false)")
        } else if !out.idempotent {
            Some("not run again: the app may have acted on it (only idempotent methods are)")
        } else if tries.reran {
            Some("not run again: its first worker went away too (a request that kills its worker?)")
        } else {
            None
        }
    }
}

/// How an exchange ended, short of failing.
enum Exchanged {
    /// The worker's answer began: its head, its body still on the
    /// connection, and the part of the request body not yet written.
    Head(Conn, ResponseHead, Option<BodyRest>),
    /// A request sent ahead was taken back unrun (`ahead::Turned`).
    Withdrawn(Back),
}

/// One request/response head exchange with a worker, on a pooled or new
/// connection. A request sent ahead waits for its turn first.
async fn exchange(
    lease: &Lease,
    out: &Outgoing<'_>,
    order: Order,
) -> std::result::Result<Exchanged, ExchangeError> {
    let Order {
        rescue,
        after,
        written,
    } = order;
    if let Some(after) = after {
        ahead::after_previous(after).await;
    }
    let mut conn = match lease.take_conn() {
        Some(c) => c,
        None => {
            let stream = tokio::time::timeout(Duration::from_secs(5), lease.peer.connect())
                .await
                .map_err(|_| ExchangeError::NotDelivered(std::io::ErrorKind::TimedOut.into()))?
                .map_err(ExchangeError::from_connect)?;
            BufReader::with_capacity(upstream::READ_CHUNK, stream)
        }
    };
    if rescue.is_some() {
        // `wait_turn` waits for the answer to become readable.
        conn.get_ref().forget_readiness();
    }
    let sending = upstream::Sending {
        head: out.head,
        body: out.body,
        name_link: lease.names_links,
        pass_file: lease.interface == crate::ipc::Interface::Wsgi,
    };
    let (nth, mut rest) = upstream::send(&mut conn, sending, written).await?;
    // An ASGI app starts on the head, and a worker's loop reads eagerly: a
    // body its socket could not take at once means the head was read and
    // the app may have begun (a database write, say). A failure from then
    // on is a 502, never a retry that would run it twice. (A WSGI worker
    // runs its app only once it has the whole body.)
    let begun = lease.interface == crate::ipc::Interface::Asgi && rest.is_some();
    let taken = |e: ExchangeError| if begun { e.taken() } else { e };
    if let Some(rescue) = rescue {
        // Sent ahead (small bodies only): whole before its turn is watched.
        if let Some(mut r) = rest.take() {
            r.finish()
                .await
                .map_err(|e| taken(ExchangeError::NotDelivered(e)))?;
        }
        // Withdrawn: the connection is dropped; the worker skips the
        // request when it comes to it, then sees the close.
        if let Turned::Withdrawn(free) = ahead::wait_turn(lease, &conn, nth, rescue).await {
            return Ok(Exchanged::Withdrawn(free));
        }
    }
    let resp = head_while_writing(&mut conn, out.is_head, &mut rest)
        .await
        .map_err(taken)?;
    Ok(Exchanged::Head(conn, resp, rest))
}

/// Reads the answer's head while the rest of the body, if any, is written:
/// the app may answer first (`body_rest`). A write that fails leaves the
/// head to tell: a worker that answered and closed has its answer read; one
/// that died gets the write's error, as before (not delivered).
async fn head_while_writing(
    conn: &mut Conn,
    is_head: bool,
    rest: &mut Option<BodyRest>,
) -> std::result::Result<ResponseHead, ExchangeError> {
    let head = upstream::read_head(conn, is_head);
    tokio::pin!(head);
    let mut write_failed = None;
    loop {
        tokio::select! {
            biased;
            resp = &mut head => {
                return match (resp, write_failed) {
                    (Err(_), Some(e)) => Err(ExchangeError::NotDelivered(e)),
                    (resp, _) => resp,
                };
            }
            done = body_rest::finish(rest) => {
                *rest = None;
                write_failed = done.err();
            }
        }
    }
}

/// A worker just failed an exchange: most likely it is dead, and the master
/// will say so shortly. Until then, send it nothing more; the master puts
/// it back (`up` again) if it turns out to be alive. `tell` is what the
/// master hears: `Suspect`, or `Vanished` for one that went away with the
/// request in hand.
fn suspect(pool: &Pool, status_fd: std::os::fd::RawFd, worker: u64, tell: fn(u64) -> Status) {
    pool.worker_down(worker);
    crate::ipc::send_status(status_fd, &tell(worker));
}

/// A request overran `app.timeout`. A WSGI worker is stuck in it: it gets
/// no more requests here, and the master dumps its Python stacks and
/// replaces it. An ASGI worker runs other requests beside it: dropping the
/// connection cancels just this one's task (the worker's own watchdog
/// reports a blocked event loop).
pub(crate) fn report_timeout(
    pool: &Pool,
    status_fd: std::os::fd::RawFd,
    lease: &Lease,
    what: &Job,
    timeout: Option<Duration>,
) {
    let worker = lease.worker;
    if lease.interface == crate::ipc::Interface::Asgi {
        error!(
            "{what} timed out after {:?} in worker {worker}; its task is cancelled",
            timeout.unwrap_or_default()
        );
        return;
    }
    error!(
        "{what} timed out after {:?} in worker {worker}; the worker will be replaced",
        timeout.unwrap_or_default()
    );
    pool.worker_down(worker);
    crate::ipc::send_status(status_fd, &Status::Timeout(worker, what.to_string()));
}
