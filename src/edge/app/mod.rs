//! Requests for the Python app: read the request body, take a worker from
//! the pool (queue, 503), write the request to it over its Unix socket, and
//! relay its response (compression, the response buffer).

mod ahead;
mod body_fd;
mod body_rest;
pub(crate) mod exchange;
pub(crate) mod forward;
pub(crate) mod handed_over;
pub(crate) mod hints;
pub mod job;
pub mod peer;
pub mod pool;
pub(crate) mod relay;
pub(crate) mod request_body;
pub(crate) mod response_buffer;
pub(crate) mod tunnel;
mod unix_link;
pub(crate) mod upstream;

use crate::edge::admit::routes::Applied;
use crate::edge::request::{Ctx, Edge};
use pingora_core::Result;
use pingora_proxy::Session;

impl Edge {
    /// A request for the app: its body (limits), a worker (queue, retry),
    /// then the worker's response out to the client.
    pub(crate) async fn serve_app(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        applied: &Applied<'_>,
    ) -> Result<bool> {
        let Some(body) = self.read_body(session, ctx, applied).await? else {
            return Ok(true);
        };
        let head = forward::request_head(
            session,
            (&ctx.request_id, ctx.received),
            forward::Then::Body(body.len()),
            ctx.client,
            ctx.scheme,
        );
        let Some(answer) = self.dispatch(session, ctx, &head, &body, false).await? else {
            return Ok(true);
        };
        // Boxed, as `attempt` boxes the exchange: the futures around this
        // one would otherwise each carry and copy its ~3 KiB.
        Box::pin(self.relay_response(session, ctx, answer)).await
    }
}
