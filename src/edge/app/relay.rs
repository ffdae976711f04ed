//! How an app response goes out to the client: its head adjusted for the
//! client (compression, framing, `X-Accel-Buffering`), then its body through
//! an optional encoder, from the worker's connection or the response
//! buffer (memory, then a temp file) a task fills from it.

use crate::config::schema::Compression;
use crate::edge::app::body_rest::{self, BodyRest};
use crate::edge::app::exchange::{client_gone, report_timeout, Answer};
use crate::edge::app::job::{Job, Work};
use crate::edge::app::pool::{Conn, Lease, Pool};
use crate::edge::app::response_buffer;
use crate::edge::app::upstream::{self, BodyReader, Framing, ResponseHead};
use crate::edge::compression::{self, Coding, Encoder, ResponseFacts};
use crate::edge::reply;
use crate::edge::request::{Ctx, Edge};
use bytes::Bytes;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tracing::{debug, error, warn};

/// Where a response body goes: straight to the client or through an encoder.
pub struct Sink {
    encoder: Option<Encoder>,
    /// Make each piece decodable as it arrives: streamed responses (the app
    /// yields as it goes) and `X-Accel-Buffering: no`.
    flush_each: bool,
}

/// Builds the head sent to the client and the sink its body goes through.
pub fn prepare(
    session: &mut Session,
    cfg: &Compression,
    resp: &ResponseHead,
) -> Result<(ResponseHeader, Sink)> {
    let mut header = crate::edge::app::forward::response_header(session, resp)?;
    let unbuffered = header
        .headers
        .get("x-accel-buffering")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no"));
    // An instruction to the proxy, as with nginx: never passed on.
    header.remove_header("x-accel-buffering");
    let streamed = matches!(resp.framing, Framing::Chunked | Framing::UntilClose);
    let coding = choose_coding(session, cfg, resp, &mut header)?;
    if let Some(coding) = coding {
        let h1_chunked =
            !session.is_http2() && session.req_header().version == http::Version::HTTP_11;
        compression::encoded_head(&mut header, coding, h1_chunked)?;
    }
    let close_delimited = header.headers.get(http::header::CONTENT_LENGTH).is_none()
        && header
            .headers
            .get(http::header::TRANSFER_ENCODING)
            .is_none()
        && resp.framing != Framing::Empty;
    if close_delimited && !session.is_http2() {
        // An HTTP/1.0 client learns where the body ends from the close.
        session.set_keepalive(None);
    }
    let encoder = match coding {
        Some(c) => Some(
            Encoder::new(c, cfg.level)
                .map_err(|e| Error::explain(ErrorType::InternalError, e.to_string()))?,
        ),
        None => None,
    };
    let flush_each = streamed || unbuffered;
    Ok((
        header,
        Sink {
            encoder,
            flush_each,
        },
    ))
}

/// The coding for this response, if any; adds `Vary` whenever the response
/// could have been compressed.
fn choose_coding(
    session: &Session,
    cfg: &Compression,
    resp: &ResponseHead,
    header: &mut ResponseHeader,
) -> Result<Option<Coding>> {
    let facts = ResponseFacts {
        status: resp.status,
        headers: &resp.headers,
        len: known_length(resp),
    };
    if !compression::eligible(cfg, &facts) {
        return Ok(None);
    }
    compression::add_vary(header)?;
    Ok(compression::choose(session.req_header()))
}

/// The body length, when the head tells it. A HEAD response has no body
/// but its Content-Length says what GET would send (and without one, GET
/// would stream it), and HEAD must get the headers GET would.
fn known_length(resp: &ResponseHead) -> Option<u64> {
    match resp.framing {
        Framing::Length(n) => Some(n),
        Framing::Empty => resp.declared_len,
        Framing::Chunked | Framing::UntilClose => None,
    }
}

impl Sink {
    /// Sends one piece of the body.
    pub async fn send(&mut self, session: &mut Session, data: Bytes) -> Result<()> {
        let out = match &mut self.encoder {
            None => data,
            Some(enc) => enc.push(&data, self.flush_each).map_err(encode_error)?,
        };
        if !out.is_empty() {
            session.write_response_body(Some(out), false).await?;
        }
        Ok(())
    }

    /// Ends the body: the encoder's last bytes, then the trailers if any
    /// (the worker offers them only to clients that take them: h2, or a
    /// chunked HTTP/1.1 body), which end the stream.
    pub async fn end(self, session: &mut Session, trailers: Vec<(String, Vec<u8>)>) -> Result<()> {
        let tail = match self.encoder {
            None => None,
            Some(enc) => Some(enc.finish().map_err(encode_error)?),
        };
        let trailers = trailer_map(&trailers);
        match trailers {
            Some(map) => {
                session.write_response_body(tail, false).await?;
                session.write_response_trailers(map).await
            }
            _ => session.write_response_body(tail, true).await,
        }
    }

    /// A body that broke off: what the encoder holds of it goes out,
    /// decodable, before the client is cut off. (Without this a compressed
    /// body that broke off reached the client as the coding's header alone,
    /// while an identity one arrived with every byte the app sent.) Best
    /// effort: the response fails either way.
    pub async fn cut_short(&mut self, session: &mut Session) {
        let Some(enc) = &mut self.encoder else { return };
        match enc.push(&[], true) {
            Ok(out) if !out.is_empty() => {
                if let Err(e) = session.write_response_body(Some(out), false).await {
                    debug!("sending the encoder's last bytes: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => debug!("flushing the encoder of a cut-short body: {e}"),
        }
    }

    /// A body that is already whole: encoded in one go.
    pub async fn whole(mut self, session: &mut Session, body: Bytes) -> Result<()> {
        self.flush_each = false;
        if self.encoder.is_none() {
            return session.write_response_body(Some(body), true).await;
        }
        self.send(session, body).await?;
        self.end(session, Vec::new()).await
    }
}

/// The worker's trailer fields that may travel as trailers, as a map.
fn trailer_map(fields: &[(String, Vec<u8>)]) -> Option<http::HeaderMap> {
    let mut map = http::HeaderMap::new();
    for (name, value) in fields {
        let lname = name.to_ascii_lowercase();
        if !crate::wire::trailer_allowed(&lname) {
            continue;
        }
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(lname.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        map.append(n, v);
    }
    (!map.is_empty()).then_some(map)
}

fn encode_error(e: std::io::Error) -> Box<Error> {
    Error::explain(
        ErrorType::InternalError,
        format!("compressing the response: {e}"),
    )
}

impl Edge {
    /// Sends a worker's answer on to the client. Small bodies already
    /// read go out at once; longer ones are read by their own task into
    /// the response buffer, so the worker is free once its response is in.
    pub(crate) async fn relay_response(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        answer: Answer,
    ) -> Result<bool> {
        let Answer {
            lease,
            mut conn,
            resp,
            rest,
            job,
            deadline,
        } = answer;
        ctx.status = resp.status;
        let (header, mut sink) = prepare(session, &self.compression, &resp)?;
        // An answer that is whole while the request body is not all sent
        // (a 401 before an upload): the rest is not wanted, and the
        // connection, mid-body, cannot carry another request.
        let reusable = !resp.close && rest.is_none();
        if resp.framing == Framing::Empty {
            ctx.work = Some(settle(lease, conn, reusable).await);
            reply::header(&self.state, session, header, true).await?;
            return Ok(true);
        }
        // A body already sitting whole in our read buffer (small responses,
        // the common case) goes out at once: no task, no channel, and the
        // worker is released before the client write even starts.
        if let Framing::Length(n) = resp.framing {
            if conn.buffer().len() as u64 >= n {
                let body = Bytes::copy_from_slice(&conn.buffer()[..n as usize]);
                conn.consume(n as usize);
                ctx.work = Some(settle(lease, conn, reusable).await);
                reply::header(&self.state, session, header, false).await?;
                sink.whole(session, body).await?;
                return Ok(true);
            }
        }
        // Until the worker's whole answer is in, what is known: a body that
        // breaks off leaves this in the log (app time until the head).
        ctx.work = Some(lease.begun().work());
        reply::header(&self.state, session, header, false).await?;
        // If the client goes away the task stops reading, which the app
        // sees as a broken connection.
        let (writer, mut reader) = response_buffer::channel(&self.buffers);
        let relay = BodyRelay {
            framing: resp.framing,
            reusable: !resp.close,
            rest,
            deadline,
            pool: self.pool.clone(),
            status_fd: self.status_fd,
            timeout: self.timeout,
            what: job,
        };
        tokio::spawn(relay.run(lease, conn, writer));
        // Watched once for the whole body, not subscribed again per piece.
        let drain_over = self.state.drain_over();
        tokio::pin!(drain_over);
        loop {
            // A quiet stream (server-sent events, a long poll) may send
            // nothing for hours: the client leaving is watched meanwhile,
            // so the worker hears it now and not at a write that may never
            // come. (Only while a piece is late: `client_gone` waits first.)
            let piece = tokio::select! {
                biased;
                p = reader.next() => p,
                gone = client_gone(session) => {
                    debug!("request {}: the client left a quiet stream: {gone}", ctx.request_id);
                    ctx.incomplete = true;
                    ctx.client_left = true;
                    return Err(gone);
                }
                _ = &mut drain_over => {
                    warn!("request {}: cut off at the end of the drain (app.graceful_timeout)", ctx.request_id);
                    ctx.incomplete = true;
                    sink.cut_short(session).await;
                    session.as_downstream_mut().shutdown().await;
                    return Err(Error::explain(ErrorType::ReadError, "cut off at the end of the drain"));
                }
            };
            let Some(piece) = piece else { break };
            match piece {
                Ok(data) => sink.send(session, data).await?,
                Err(e) => {
                    error!("request {}: {e}", ctx.request_id);
                    ctx.incomplete = true;
                    // Cut the client off: a truncated body must not look
                    // complete. What came before still goes out first (as
                    // nginx and gunicorn send it): an HTTP/1 close flushes
                    // the buffered head and body, and h2 resets the stream
                    // after its queued frames (vendor/h2 `send_reset_after_queued`).
                    sink.cut_short(session).await;
                    session.as_downstream_mut().shutdown().await;
                    return Err(Error::explain(ErrorType::ReadError, e.to_string()));
                }
            }
        }
        let trailers = reader.take_trailers();
        if let Some(work) = reader.take_work() {
            ctx.work = Some(work);
        }
        sink.end(session, trailers).await?;
        Ok(true)
    }
}

/// Reads a worker's response body into the response buffer, then gives
/// the connection back to the pool (or drops it).
struct BodyRelay {
    framing: Framing,
    reusable: bool,
    /// The request body's part not yet written: the app answers while it
    /// reads it (a streamed echo), so it is written as the answer is read.
    rest: Option<BodyRest>,
    /// `app.timeout`, counted from when the worker got the request; then
    /// from each piece of the body.
    deadline: Option<tokio::time::Instant>,
    pool: Arc<Pool>,
    status_fd: std::os::fd::RawFd,
    timeout: Option<Duration>,
    what: Job,
}

impl BodyRelay {
    async fn run(mut self, lease: Lease, mut conn: Conn, writer: response_buffer::Writer) {
        let mut reader = BodyReader::new(self.framing);
        let mut deadline = self.deadline;
        loop {
            let next = tokio::select! {
                biased;
                next = in_time(deadline, reader.next(&mut conn)) => next,
                // Dropping the connection tells the worker the client left.
                () = writer.client_gone() => return,
                done = body_rest::finish(&mut self.rest) => {
                    if let Err(e) = done {
                        // The worker stopped reading (its app answered and
                        // is done with the body): the answer still comes.
                        debug!("{}: the rest of the request body was not taken: {e}", self.what);
                        self.reusable = false;
                    }
                    self.rest = None;
                    continue;
                }
            };
            let Some(next) = next else {
                report_timeout(&self.pool, self.status_fd, &lease, &self.what, self.timeout);
                writer.fail(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "app.timeout passed while the app was still sending its body",
                ));
                return;
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
        let trailers = std::mem::take(&mut reader.trailers);
        let reusable = self.reusable && reader.is_done() && self.rest.is_none();
        let work = settle(lease, conn, reusable).await;
        writer.end(trailers, work);
    }
}

/// `fut` by `deadline` if there is one; None when it passed first.
async fn in_time<F: std::future::Future>(
    deadline: Option<tokio::time::Instant>,
    fut: F,
) -> Option<F::Output> {
    match deadline {
        None => Some(fut.await),
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
    }
}

/// How long a worker gets to send its receipt once its body is in: it
/// writes both at once, so this only bounds a confused worker.
const RECEIPT_WITHIN: Duration = Duration::from_secs(1);

/// The end of a worker's answer: its receipt read (normally already in our
/// buffer), then the connection back to the pool if it can carry another
/// request, and the worker's slot freed (the lease ends here).
async fn settle(lease: Lease, mut conn: Conn, reusable: bool) -> Work {
    let read = tokio::time::timeout(RECEIPT_WITHIN, upstream::read_receipt(&mut conn)).await;
    let receipt = match read {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            debug!("worker {}: {e}; not reusing its connection", lease.worker);
            None
        }
        Err(_) => {
            debug!(
                "worker {}: no receipt; not reusing its connection",
                lease.worker
            );
            None
        }
    };
    if reusable && receipt.is_some() {
        lease.put_conn(conn);
    }
    lease.work(receipt)
}
