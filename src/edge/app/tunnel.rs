//! WebSockets (RFC 6455 over HTTP/1.1, RFC 8441 over HTTP/2): the
//! handshake goes to an ASGI worker like any request (as an HTTP/1.1
//! upgrade either way); on its `101` the edge answers the client (101, or
//! 200 on an h2 stream) and becomes a byte tunnel between the two for the
//! socket's life — outside the response buffering, with `app.timeout` no
//! longer applying (it covers only the handshake). The worker parses the
//! frames; the edge only moves bytes (as an h2 stream's DATA frames when
//! the client came over h2), with back-pressure both ways (one write at a
//! time). Over HTTP/1.1 the tunnel leaves pingora's request for the
//! connection's own task (`handed_over.rs`).

use crate::edge::app::handed_over::{Closing, HandedOver, Held};
use crate::edge::app::pool::Conn;
use crate::edge::app::request_body::RequestBody;
use crate::edge::app::upstream::ResponseHead;
use crate::edge::app::{exchange::Answer, forward};
use crate::edge::request::{Ctx, Edge};
use crate::edge::route::WebSocketAsk;
use bytes::Bytes;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use tokio::io::AsyncWriteExt;
use tracing::debug;

const WSGI_REFUSAL: &str =
    "Not Implemented: this site's app speaks WSGI, which has no WebSocket support";

/// One step of the tunnel: bytes from one side, its end, or the edge
/// stopping.
enum Step {
    FromClient(Option<Bytes>),
    FromWorker,
    Closed(&'static str),
    Ending,
}

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
        let body = RequestBody::Memory(Vec::new());
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
        let open = self.metrics.open("websocket");
        if let Some((client, early)) = session.as_downstream_mut().hand_over_upgraded().await? {
            // Its connection's task runs it once pingora lets go
            // (`handed_over.rs`); this request ends here.
            let held = Held {
                lease,
                open,
                in_flight: ctx.take_in_flight(),
            };
            let tunnel = HandedOver {
                client,
                early,
                worker: conn,
                ending: self.state.tunnels_ending(),
                held,
                log: self.closing(session, ctx),
            };
            ctx.handed_over = true;
            self.state.handovers.put(tunnel.client.id(), tunnel);
            return Ok(true);
        }
        let _open = open;
        let why = tunnel(session, conn, self.state.tunnels_ending()).await;
        debug!("websocket (request {}) closed: {why}", ctx.request_id);
        drop(lease);
        let _ = session.write_response_body(None, true).await;
        Ok(true)
    }
}

impl Edge {
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

/// The edge asking its tunnels to end (`EdgeState::tunnels_ending`).
pub(crate) struct Ending(pub(crate) Option<tokio::sync::watch::Receiver<bool>>);

impl Ending {
    /// Resolves once, when the edge asks; after that (or if it never
    /// will: the edge's state is gone) it stays pending.
    pub(crate) async fn asked(&mut self) {
        if let Some(rx) = &mut self.0 {
            let asked = rx.wait_for(|end| *end).await.is_ok();
            self.0 = None;
            if asked {
                return;
            }
        }
        std::future::pending().await
    }
}

/// What a worker that closed before taking all the client sent (a message
/// over `max_message`) still had to say: its close frame, read from its
/// connection (at most 64 KiB, waiting at most 200 ms for each piece).
pub(crate) async fn last_words(worker: &crate::edge::app::peer::Stream) -> Vec<u8> {
    let mut said = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let within = std::time::Duration::from_millis(200);
    while said.len() < 64 * 1024 {
        if !matches!(
            tokio::time::timeout(within, worker.readable()).await,
            Ok(Ok(()))
        ) {
            break;
        }
        match worker.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    said
}

/// How much of the worker's side is read at once.
const CHUNK: usize = 16 * 1024;

/// Moves bytes both ways until one side closes; returns why it ended.
/// When the edge stops, the worker's side is half-closed: the worker hears
/// it as "going away", sends the client a 1001 close and ends the socket.
/// An idle tunnel holds no read buffer (thousands may be open at once).
async fn tunnel(
    session: &mut Session,
    conn: Conn,
    ending: tokio::sync::watch::Receiver<bool>,
) -> &'static str {
    // Frames the worker sent right behind its 101 are already buffered.
    let early = Bytes::copy_from_slice(conn.buffer());
    let mut stream = conn.into_inner();
    if !early.is_empty()
        && session
            .write_response_body(Some(early), false)
            .await
            .is_err()
    {
        return "the client went away";
    }
    let mut ending = Ending(Some(ending));
    loop {
        let step = tokio::select! {
            () = ending.asked() => Step::Ending,
            r = session.read_request_body() => match r {
                Ok(bytes) => Step::FromClient(bytes),
                Err(_) => Step::Closed("the client's connection failed"),
            },
            r = stream.readable() => match r {
                Ok(()) => Step::FromWorker,
                Err(_) => Step::Closed("the worker's connection failed"),
            },
        };
        match step {
            Step::FromClient(Some(bytes)) => {
                if stream.write_all(&bytes).await.is_err() {
                    // Its close frame still goes (see `last_words`).
                    let said = last_words(&stream).await;
                    if !said.is_empty() {
                        let _ = session.write_response_body(Some(said.into()), false).await;
                    }
                    return "the worker went away";
                }
            }
            Step::FromClient(None) => {
                // The client closed: dropping the worker's connection tells
                // the app (1006 unless a close frame came first).
                return "the client closed it";
            }
            Step::Ending => {
                let _ = stream.shutdown().await;
            }
            Step::FromWorker => {
                let mut buf = vec![0u8; CHUNK];
                match stream.try_read(&mut buf) {
                    Ok(0) => return "the worker closed it",
                    Ok(n) => {
                        buf.truncate(n);
                        if session
                            .write_response_body(Some(buf.into()), false)
                            .await
                            .is_err()
                        {
                            return "the client went away";
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return "the worker's connection failed",
                }
            }
            Step::Closed(why) => return why,
        }
    }
}
