//! Request bodies, read in full from the client before a worker is chosen:
//! a slow upload then costs the edge a buffer, never a Python worker.
//! Small bodies stay in memory; larger ones spill to an unlinked temp file.
//! The route's limits apply here: a declared or actual size over `max_body`
//! is a 413, `Expect: 100-continue` is answered, `body_timeout` is a 408.

use crate::edge::admit::routes::Applied;
use crate::edge::request::{Ctx, Edge};
use bytes::Bytes;
use pingora_proxy::Session;
use std::io::Write;

/// Bodies up to this size stay in memory.
const IN_MEMORY: usize = 1 << 20;

/// Cheap to clone: the part a worker has not taken yet is written while its
/// answer is read (`body_rest`), which outlives the request's borrow.
#[derive(Clone)]
pub enum RequestBody {
    Memory(Bytes),
    /// Read with positioned reads: shared without a lock.
    File(std::sync::Arc<std::fs::File>, u64),
}

pub enum BodyError {
    TooLarge,
    /// pingora's per-read timeout (`body_timeout`) fired.
    TimedOut,
    Client(String),
    Io(std::io::Error),
}

impl RequestBody {
    pub fn len(&self) -> u64 {
        match self {
            RequestBody::Memory(v) => v.len() as u64,
            RequestBody::File(_, n) => *n,
        }
    }

    /// Reads the whole body from the client, refusing more than `max`.
    pub async fn read(session: &mut Session, max: u64) -> Result<RequestBody, BodyError> {
        let mut mem: Vec<u8> = Vec::new();
        let mut file: Option<std::fs::File> = None;
        let mut total: u64 = 0;
        loop {
            let chunk = session
                .read_request_body()
                .await
                .map_err(|e| match e.etype() {
                    pingora_core::ErrorType::ReadTimedout => BodyError::TimedOut,
                    _ => BodyError::Client(e.to_string()),
                })?;
            let Some(chunk) = chunk else { break };
            total += chunk.len() as u64;
            if total > max {
                return Err(BodyError::TooLarge);
            }
            match file.as_mut() {
                Some(f) => write_blocking(f, &chunk).await?,
                None if mem.len() + chunk.len() > IN_MEMORY => {
                    let mut f = tokio::task::spawn_blocking(tempfile::tempfile)
                        .await
                        .map_err(|e| BodyError::Io(std::io::Error::other(e)))?
                        .map_err(BodyError::Io)?;
                    write_blocking(&mut f, &mem).await?;
                    write_blocking(&mut f, &chunk).await?;
                    mem = Vec::new();
                    file = Some(f);
                }
                None => mem.extend_from_slice(&chunk),
            }
        }
        Ok(match file {
            Some(f) => RequestBody::File(std::sync::Arc::new(f), total),
            None => RequestBody::Memory(Bytes::from(mem)),
        })
    }

    /// The body from byte `offset` on, or a piece of it: a spooled body is
    /// read in pieces, off the async threads.
    pub async fn bytes_after(&self, offset: u64) -> std::io::Result<Bytes> {
        match self {
            RequestBody::Memory(b) => {
                let at = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                Ok(b.slice(at..))
            }
            RequestBody::File(f, len) => {
                let f = f.clone();
                let want = (*len - offset.min(*len)).min(SPOOLED_PIECE as u64) as usize;
                let piece = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                    let mut buf = Vec::with_capacity(want);
                    crate::edge::files::read::pread_into(&f, &mut buf, offset)?;
                    Ok(buf)
                })
                .await
                .map_err(std::io::Error::other)??;
                if piece.is_empty() && want > 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "spooled body shorter than expected",
                    ));
                }
                Ok(Bytes::from(piece))
            }
        }
    }
}

/// How much of a spooled body is read at a time.
const SPOOLED_PIECE: usize = 256 * 1024;

// Disk writes happen off the async threads, so they never stall other requests.
async fn write_blocking(f: &mut std::fs::File, data: &[u8]) -> Result<(), BodyError> {
    let mut f2 = f.try_clone().map_err(BodyError::Io)?;
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || f2.write_all(&data))
        .await
        .map_err(|e| BodyError::Io(std::io::Error::other(e)))?
        .map_err(BodyError::Io)
}

impl Edge {
    /// The request's body, read whole under the route's limits. None: the
    /// request was answered here (413, 417, 408, 400, 500).
    pub(crate) async fn read_body(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        applied: &Applied<'_>,
    ) -> pingora_core::Result<Option<RequestBody>> {
        // A declared length over the limit is refused before reading a byte.
        if ctx.declared_length.is_some_and(|n| n > applied.max_body) {
            return self.too_large(session, ctx, applied).await.map(|_| None);
        }
        match expectation(session) {
            Expectation::None => {}
            Expectation::Continue => session.write_continue_response().await?,
            Expectation::Unsupported => {
                let why = "Expectation Failed: only 100-continue is supported";
                return self.refuse(session, ctx, 417, why).await.map(|_| None);
            }
        }
        let body_timeout = applied.body_timeout;
        session.set_read_timeout(Some(body_timeout));
        let read =
            tokio::time::timeout(body_timeout, RequestBody::read(session, applied.max_body)).await;
        let (status, why) = match read {
            Ok(Ok(b)) => return Ok(Some(b)),
            // Two clocks, one meaning: the whole body, or its next piece,
            // took longer than body_timeout.
            Err(_) | Ok(Err(BodyError::TimedOut)) => {
                (408, "Request Timeout: the body took too long")
            }
            Ok(Err(BodyError::TooLarge)) => {
                return self.too_large(session, ctx, applied).await.map(|_| None)
            }
            Ok(Err(BodyError::Client(e))) => {
                // The client broke off or sent a malformed body (bad chunk
                // sizes, missing CRLFs...): answer 400 if it is still there.
                // One that is gone (an h2 stream it reset) cannot be
                // answered: no error of ours to log.
                tracing::debug!("request {}: bad or broken body: {e}", ctx.request_id);
                let why = "Bad Request: malformed body";
                let answered = self.refuse(session, ctx, 400, why).await;
                ctx.client_left = answered.is_err();
                return answered.map(|_| None);
            }
            Ok(Err(BodyError::Io(e))) => return self.cannot_spool(session, ctx, e).await,
        };
        self.refuse(session, ctx, status, why).await.map(|_| None)
    }

    /// A body too large for memory that the temp folder cannot take (a
    /// full disk, no such folder): 507 with the reason, as a worker says
    /// it, and the folder in the log for the operator.
    async fn cannot_spool(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        e: std::io::Error,
    ) -> pingora_core::Result<Option<RequestBody>> {
        tracing::error!(
            "request {}: cannot spool a request body to a temp file in {}: {e}; answering 507",
            ctx.request_id,
            std::env::temp_dir().display()
        );
        let why = format!("Insufficient Storage: the server cannot store the request body ({e})");
        self.refuse(session, ctx, 507, &why).await.map(|_| None)
    }

    /// 413, naming the limit and the key that sets it, for the client and
    /// in the error log (an operator raising a limit needs the key).
    async fn too_large(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        applied: &Applied<'_>,
    ) -> pingora_core::Result<bool> {
        let key = match applied.max_body_route {
            Some(path) => format!("max_body of the [[limits.route]] with path = \"{path}\""),
            None => "[limits] max_body".to_string(),
        };
        let msg = format!(
            "Request body too large: the limit is {} bytes (set by {key})",
            applied.max_body
        );
        tracing::info!(
            "{}: {msg}",
            crate::edge::app::job::Job::of(session, &ctx.request_id)
        );
        self.refuse(session, ctx, 413, &msg).await?;
        drain_h2_upload(session).await;
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
