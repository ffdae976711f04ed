//! WebSockets (RFC 6455 over HTTP/1.1, RFC 8441 over HTTP/2): the
//! handshake goes to an ASGI worker like any request (as an HTTP/1.1
//! upgrade either way); on its `101` the edge answers the client (101, or
//! 200 on an h2 stream) and becomes a byte tunnel between the two for the
//! socket's life — outside the response buffering, with `app.timeout` no
//! longer applying (it covers only the handshake). The worker parses the
//! frames; the edge only moves bytes (as an h2 stream's DATA frames when
//! the client came over h2), with back-pressure both ways (one write at a
//! time). The tunnel runs outside pingora's request, which ends once the
//! client's side is handed over (`handed_over.rs`).

use crate::edge::app::handed_over::{Client, Closing, HandedOver, Held};
use crate::edge::app::request_body::RequestBody;
use crate::edge::app::upstream::ResponseHead;
use crate::edge::app::{exchange::Answer, forward};
use crate::edge::request::{Ctx, Edge};
use crate::edge::route::WebSocketAsk;
use bytes::Bytes;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

const WSGI_REFUSAL: &str =
    "Not Implemented: this site's app speaks WSGI, which has no WebSocket support";

impl Edge {
    /// An `Upgrade: websocket` request.
    pub(crate) async fn serve_upgrade(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        ask: WebSocketAsk,
    ) -> Result<bool> {
        if self.pool.only_wsgi() {
            return self.refuse(session, ctx, 501, WSGI_REFUSAL).await;
        }
        let head = forward::request_head(
            session,
            (&ctx.request_id, ctx.received),
            forward::Then::WebSocket,
            ctx.client,
            ctx.scheme,
        );
        let body = RequestBody::Memory(bytes::Bytes::new());
        let Some(answer) = self.dispatch(session, ctx, &head, &body, true).await? else {
            return Ok(true);
        };
        if answer.resp.status != 101 {
            // Denied (403, or the app's own response): an ordinary answer.
            return self.relay_response(session, ctx, answer).await;
        }
        self.open_tunnel(session, ctx, answer, ask).await
    }

    async fn open_tunnel(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        answer: Answer,
        ask: WebSocketAsk,
    ) -> Result<bool> {
        let Answer {
            lease, conn, resp, ..
        } = answer;
        let header = match ask {
            WebSocketAsk::ExtendedConnect => stream_accepted(session, &resp)?,
            WebSocketAsk::Upgrade => connection_upgraded(session, &resp)?,
        };
        ctx.status = header.status.as_u16();
        session
            .write_response_header(Box::new(header), false)
            .await?;
        // A socket may sit idle for hours: the body timeout is for uploads.
        session.set_read_timeout(None);
        // The request ends here; its tunnel runs on without it
        // (`handed_over.rs`): an idle socket then holds only that.
        let log = self.closing(session, ctx);
        let (client, early) = match ask {
            WebSocketAsk::Upgrade => {
                match session.as_downstream_mut().hand_over_upgraded().await? {
                    Some((stream, early)) => (Client::Raw(stream), early),
                    None => return Err(not_handed_over()),
                }
            }
            WebSocketAsk::ExtendedConnect => match session.as_downstream_mut().hand_over_h2() {
                Some(stream) => (Client::H2(stream), Bytes::new()),
                None => return Err(not_handed_over()),
            },
        };
        let held = Held {
            lease,
            open: self.metrics.open("websocket"),
            in_flight: ctx.take_in_flight(),
        };
        let tunnel = HandedOver {
            client,
            early,
            worker: conn,
            ending: self.state.tunnels_ending(),
            held,
            log,
        };
        ctx.handed_over = true;
        match tunnel.connection_id() {
            // HTTP/1.1: the connection's own task runs it once pingora
            // lets go (`conn::accept::serve_http1`).
            Some(id) => self.state.handovers.put(id, tunnel),
            // HTTP/2: its stream's task ends with this request; the
            // connection goes on serving other streams.
            None => {
                tokio::spawn(tunnel.run());
            }
        }
        Ok(true)
    }

    /// The access log line and metrics a handed-over tunnel writes when it
    /// closes.
    fn closing(&self, session: &Session, ctx: &Ctx) -> Closing {
        Closing {
            request: self
                .state
                .log
                .enabled()
                .then(|| self.logged_request(session, ctx)),
            status: ctx.status,
            started: ctx.started,
            kind: ctx.kind,
            metrics: self.metrics.clone(),
            log: self.state.log.clone(),
        }
    }
}

/// pingora kept a connection corral cannot tunnel (never for HTTP/1.1 or
/// HTTP/2 sessions).
fn not_handed_over() -> Box<pingora_core::Error> {
    pingora_core::Error::explain(
        pingora_core::ErrorType::InternalError,
        "the WebSocket's connection was not handed over",
    )
}

/// The HTTP/1.1 answer: the worker's fields (its Sec-WebSocket-Accept),
/// then the two the handshake needs that response_header drops as
/// hop-by-hop.
fn connection_upgraded(session: &Session, resp: &ResponseHead) -> Result<ResponseHeader> {
    let mut header = forward::response_header(session, resp)?;
    header.insert_header("Upgrade", "websocket")?;
    header.insert_header("Connection", "Upgrade")?;
    Ok(header)
}

/// The HTTP/2 answer (RFC 8441 §5): 200 opens the stream for frames; the
/// worker's other fields (subprotocol, extensions, the app's own) pass,
/// but not Sec-WebSocket-Accept, which h2 does not use.
fn stream_accepted(session: &Session, resp: &ResponseHead) -> Result<ResponseHeader> {
    let mut header = forward::response_header(session, resp)?;
    header.set_status(200)?;
    header.remove_header("sec-websocket-accept");
    Ok(header)
}
