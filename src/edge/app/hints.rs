//! Informational answers from a worker before its real one: a `103 Early
//! Hints` goes to the client at once, so a browser starts preloading while
//! the app still works; then the edge waits for the next head as it waited
//! for the first (`app.timeout`, the client watched).

use crate::edge::app::exchange::{client_gone, report_timeout, Answer};
use crate::edge::app::upstream::{self, ExchangeError};
use crate::edge::request::{Ctx, Edge};
use pingora_core::{Error, ErrorType, Result};
use pingora_proxy::Session;
use tracing::{debug, error};

/// A head that is not the answer yet. 101 is the answer to a WebSocket
/// handshake, so it is final here.
pub fn informational(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

/// How waiting for the next head ended.
enum Next {
    Head(upstream::ResponseHead),
    TimedOut,
    Failed(String),
    ClientGone(Box<Error>),
}

impl Edge {
    /// Passes the worker's 103s on until its final head comes; None when
    /// it was answered here (504, 502).
    pub(crate) async fn after_hints(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        what: &str,
        is_head: bool,
        mut answer: Answer,
    ) -> Result<Option<Answer>> {
        while informational(answer.resp.status) {
            if answer.resp.status == 103 {
                send_hints(session, &answer.resp).await?;
            }
            let read = next_head(&mut answer, is_head);
            let next = tokio::select! {
                n = read => n,
                e = client_gone(session) => Next::ClientGone(e),
            };
            match next {
                Next::Head(resp) => answer.resp = resp,
                Next::TimedOut => {
                    let (pool, fd, t) = (&self.pool, self.status_fd, self.timeout);
                    report_timeout(pool, fd, &answer.lease, what, t);
                    let why = "Gateway Timeout: the app took too long";
                    return self.refuse(session, ctx, 504, why).await.map(|_| None);
                }
                Next::Failed(why) => {
                    error!(
                        "{what} failed in worker {} after early hints: {why}",
                        answer.lease.worker
                    );
                    return self
                        .refuse(session, ctx, 502, "Bad Gateway")
                        .await
                        .map(|_| None);
                }
                Next::ClientGone(e) => {
                    ctx.status = 499;
                    debug!("{what}: the client went away after early hints: {e}");
                    return Err(e);
                }
            }
        }
        Ok(Some(answer))
    }
}

/// The next head, within what is left of `app.timeout`. The request was
/// delivered (a head came back), so no failure here is retried.
async fn next_head(answer: &mut Answer, is_head: bool) -> Next {
    let read = upstream::read_head(&mut answer.conn, is_head);
    let result = match answer.deadline {
        None => read.await,
        Some(d) => match tokio::time::timeout_at(d, read).await {
            Ok(r) => r,
            Err(_) => return Next::TimedOut,
        },
    };
    match result {
        Ok(resp) => Next::Head(resp),
        Err(ExchangeError::Failed(why)) => Next::Failed(why),
        Err(ExchangeError::NotDelivered(e) | ExchangeError::EdgeOutOfFds(e)) => {
            Next::Failed(e.to_string())
        }
    }
}

/// A 103 for the client: the worker's fields (Link, mostly) without the
/// hop-by-hop ones. HTTP/1.0 clients get none (RFC 9110 §15.2); pingora's
/// HTTP/2 server drops 1xx heads, so h2 clients get none either.
async fn send_hints(session: &mut Session, resp: &upstream::ResponseHead) -> Result<()> {
    if !session.is_http2() && session.req_header().version < http::Version::HTTP_11 {
        return Ok(());
    }
    let mut header = pingora_http::ResponseHeader::build(103, Some(resp.headers.len()))?;
    for (name, value) in &resp.headers {
        if !crate::wire::is_hop_by_hop(&name.to_ascii_lowercase()) {
            header.append_header(name.clone(), value.as_slice())?;
        }
    }
    session
        .write_response_header(Box::new(header), false)
        .await
        .map_err(|e| Error::because(ErrorType::WriteError, "sending 103 Early Hints", e))
}
