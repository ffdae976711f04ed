//! The edge's request path as pingora phases. Read top to bottom:
//!
//! 1. `early_request_filter`: per-connection settings (pipelining).
//! 2. `request_filter`: decide what the request is (`route.rs`) and answer
//!    it: a refusal, a redirect, a static file (`files/`) or the app
//!    (`app/`: body, worker, response). Everything is answered here, so
//!    pingora's own upstream phases never run.
//! 3. `logging`: the access log line.

use crate::edge::access_log;
use crate::edge::app::forward;
use crate::edge::request::{Ctx, Edge};
use async_trait::async_trait;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(&self.state)
    }

    /// None. pingora's default is its compression module, switched off:
    /// the edge compresses by itself (`compression.rs`), and that module
    /// cost an allocation per request. With none, a response written past
    /// pingora's filters (`reply::prepared`) misses nothing.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

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
        if let Some(id) = forward::given_request_id(session, &self.trusted) {
            ctx.request_id = id;
        }
        // Every response head echoes it (`reply::header`); an id is a
        // header's value or hex, so it always is a valid one.
        if let Ok(id) = http::HeaderValue::from_str(&ctx.request_id) {
            let echo = crate::edge::reply::EchoId(id);
            session.req_header_mut().extensions_mut().insert(echo);
        }
        // `[[limits.route]]` and `[[static]]` both match on the decoded
        // path: decode it once, and only if either is configured.
        let decoded = if self.routes.is_empty() && self.static_mounts.is_empty() {
            Vec::new()
        } else {
            crate::proto::target::decode(session.req_header().uri.path().as_bytes())
        };
        let applied = self.routes.for_path(&decoded);
        let route = self.route(session, ctx, &decoded, &applied);
        self.act(route, session, ctx, &decoded, &applied).await
    }

    /// A request that ended in an error. A client that went away (499, or
    /// its connection closed under a write) gets no answer written to its
    /// dead connection and no error line: it is an everyday event, and the
    /// access log records it. Anything else is answered as pingora does.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match (ctx.status, e.etype()) {
            (499, _) => 499,
            (_, ErrorType::HTTPStatus(code)) => *code,
            // The edge has no upstream in pingora's sense (workers are its
            // own business), so these are the client's: pingora's h2 writes
            // to a stream the client has reset leave the source unset.
            (
                _,
                ErrorType::WriteError
                | ErrorType::ReadError
                | ErrorType::ConnectionClosed
                | ErrorType::H2Error,
            ) if e.esource() != &ErrorSource::Upstream => 499,
            _ if e.esource() == &ErrorSource::Upstream => 502,
            _ if e.esource() == &ErrorSource::Downstream => 400,
            _ => 500,
        };
        if code == 499 {
            ctx.status = 499;
        } else if let Err(e) = session.respond_error(code).await {
            tracing::debug!("cannot send the error response: {e}");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _e: &Error) -> bool {
        ctx.status == 499 || ctx.client_left
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // Never reached: request_filter answers every request.
        Err(Error::explain(
            ErrorType::InternalError,
            "no upstream peer in corral's edge",
        ))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if ctx.handed_over {
            return; // logged when its tunnel closes (`app::handed_over`)
        }
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
        let took = ctx.started.elapsed();
        let sent = session.body_bytes_sent();
        self.metrics.answered(ctx.kind, status, took, sent as u64);
        if !self.state.log.enabled() {
            return;
        }
        let request = self.logged_request(session, ctx);
        self.state.log.log(&request.entry(access_log::Outcome {
            status,
            bytes: sent,
            duration: took,
            complete: !ctx.incomplete && e.is_none(),
            work: ctx.work.as_ref(),
        }));
    }
}

impl Edge {
    /// What the access log says of this request.
    pub(crate) fn logged_request(&self, session: &Session, ctx: &Ctx) -> access_log::Request {
        let req = session.req_header();
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
        access_log::Request {
            client,
            method: req.method.as_str().to_owned(),
            target: String::from_utf8_lossy(req.raw_path()).into_owned(),
            protocol: forward::protocol(req.version),
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            request_id: ctx.request_id.clone(),
        }
    }
}
