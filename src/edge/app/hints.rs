//! Informational answers from a worker before its real one: a `103 Early
//! Hints` goes to the client at once, so a browser starts preloading while
//! the app still works; then the next head is awaited as the first was
//! (`app.timeout`, the client watched), and how that ends is an `Attempt`
//! like any other, handled by `dispatch`.

use crate::edge::app::exchange::{report_timeout, Answer, Attempt, Outgoing};
use crate::edge::app::upstream::{self, ExchangeError};
use crate::edge::request::{Ctx, Edge};
use pingora_core::{Error, ErrorType, Result};
use pingora_proxy::Session;

/// A head that is not the answer yet. 101 is the answer to a WebSocket
/// handshake, so it is final here.
fn informational(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

impl Answer {
    /// Its head is a hint (a 103, or another 1xx): the answer is still to
    /// come.
    pub(super) fn is_hint(&self) -> bool {
        informational(self.resp.status)
    }
}

impl Edge {
    /// Passes the worker's 103s on (other 1xx are skipped) until an
    /// outcome that is not an informational head. (`dispatch` calls it
    /// boxed, and only for a hint: nearly no answer has one.)
    pub(super) async fn past_hints(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        out: &Outgoing<'_>,
        mut outcome: Attempt,
    ) -> Result<Attempt> {
        loop {
            let answer = match outcome {
                Attempt::Answered(a) if informational(a.resp.status) => a,
                other => return Ok(other),
            };
            if answer.resp.status == 103 {
                send_hints(session, &answer.resp).await?;
            }
            outcome = tokio::select! {
                next = self.next_head(ctx, out, answer) => next,
                e = super::exchange::client_gone(session) => Attempt::ClientGone(e),
            };
        }
    }

    /// The next head, within what is left of `app.timeout`. The request was
    /// delivered (a head came back), so a failure is never retried.
    async fn next_head(&self, ctx: &Ctx, out: &Outgoing<'_>, mut a: Answer) -> Attempt {
        let read = upstream::read_head(&mut a.conn, out.is_head);
        let result = match a.deadline {
            None => read.await,
            Some(d) => match tokio::time::timeout_at(d, read).await {
                Ok(r) => r,
                Err(_) => {
                    report_timeout(
                        &self.pool,
                        self.status_fd,
                        &a.lease,
                        &out.what,
                        self.timeout,
                    );
                    return Attempt::Refuse(504, "Gateway Timeout: the app took too long");
                }
            },
        };
        match result {
            Ok(resp) => {
                a.resp = resp;
                Attempt::Answered(a)
            }
            Err(e) => {
                let why = match e {
                    ExchangeError::Failed(why) | ExchangeError::Vanished(why) => why,
                    ExchangeError::NotDelivered(e) | ExchangeError::EdgeOutOfFds(e) => {
                        e.to_string()
                    }
                    ExchangeError::Withdrawn => "the request was given back".into(),
                };
                let failed = ExchangeError::Failed(format!("after early hints: {why}"));
                let tries = super::exchange::Tries::default();
                self.failed(ctx, out, a.lease.worker, failed, tries)
            }
        }
    }
}

/// A 103 for the client: the worker's fields (Link, mostly) without the
/// hop-by-hop ones. HTTP/1.0 clients get none (RFC 9110 §15.2); h2 ones get
/// an interim HEADERS frame (vendor/pingora-core's patch).
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
