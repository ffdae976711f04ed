//! What the edge does with a request: decided from its head by
//! `Edge::route` (no I/O), then acted on by `Edge::act`, a small function
//! per kind of answer. The checks run in the order nginx applies them: the
//! head rules, server-wide requests, upgrades, the route's rate, the
//! redirect to https, static files, then the app.

use crate::edge::admit::redirect::{self, Redirect};
use crate::edge::admit::routes::Applied;
use crate::edge::files::{self, Served, StaticMount};
use crate::edge::metrics::Kind;
use crate::edge::reply::{self, After};
use crate::edge::request::{Ctx, Edge};
use pingora_core::Result;
use pingora_proxy::Session;

pub enum Route<'a> {
    /// Refused by a rule on the head, with this status and reason.
    Refuse(u16, &'static str),
    /// `OPTIONS *`: about the server, not a resource (the app would get a
    /// PATH_INFO that is not a path, PEP 3333).
    ServerWide,
    /// `[server] health_path`: answered by the edge for load balancers.
    Health,
    /// A CA's HTTP-01 check for `[tls.acme]`.
    AcmeChallenge,
    /// Over the route's request rate: 429, retry after this many seconds.
    RateLimited(u64),
    /// `[tls] redirect_http` on a plain-HTTP request.
    Redirect(Redirect),
    /// A `[[static]]` mount (which may hand the request on to the app).
    Files(&'a StaticMount),
    /// The Python app.
    App,
    /// A WebSocket handshake: tunnelled to an ASGI worker (refused, 501,
    /// when the app is WSGI, rather than handed over as a plain GET).
    Upgrade(WebSocketAsk),
}

impl Route<'_> {
    /// For the metrics' `kind` label.
    fn kind(&self) -> Kind {
        match self {
            Route::Refuse(..) | Route::RateLimited(_) => Kind::Refused,
            Route::ServerWide | Route::Health | Route::AcmeChallenge => Kind::Edge,
            Route::Redirect(_) => Kind::Redirect,
            Route::Files(_) => Kind::Static,
            Route::App => Kind::App,
            Route::Upgrade(_) => Kind::WebSocket,
        }
    }
}

impl Edge {
    /// `decoded` is the request path, percent-decoded (empty when no
    /// route or mount needs it); `applied` the `[limits]` for it.
    pub(crate) fn route<'a>(
        &'a self,
        session: &Session,
        ctx: &mut Ctx,
        decoded: &[u8],
        applied: &Applied,
    ) -> Route<'a> {
        let raw_head = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        let req = session.req_header();
        match crate::proto::strict::check(req, raw_head.as_deref(), &self.limits) {
            Ok(declared) => ctx.declared_length = declared,
            Err((status, why)) => return Route::Refuse(status, why),
        }
        if req.raw_path() == b"*" {
            return Route::ServerWide;
        }
        // Before rate limits and the https redirect: a load balancer's
        // probe must see the site's state, not a 429 or a 301.
        if self.is_health_check(req.raw_path()) {
            return Route::Health;
        }
        if self.is_acme_challenge(req) {
            return Route::AcmeChallenge;
        }
        match connect_kind(req) {
            Some(Connect::Tunnel) => {
                return Route::Refuse(405, "Method Not Allowed: this server is not a proxy")
            }
            Some(Connect::Protocol) => {
                return Route::Refuse(501, "Not Implemented: the only protocol is websocket")
            }
            Some(Connect::WebSocket) | None => {}
        }
        let files = files::find(&self.static_mounts, decoded);
        if files.is_none() && !self.under_root_path(req.raw_path()) {
            return Route::Refuse(404, "Not Found: the app is mounted at [app] root_path");
        }
        if let Some(ask) = asks_for_websocket(req) {
            if ctx.declared_length.unwrap_or(0) > 0 {
                return Route::Refuse(400, "Bad Request: a WebSocket handshake has no body");
            }
            return Route::Upgrade(ask);
        }
        if let (Some(rate), Some(client)) = (applied.rate, ctx.client) {
            if let Err(wait) = rate.check(client.ip()) {
                return Route::RateLimited(wait);
            }
        }
        if let Some(r) = redirect::decide(&self.state, session) {
            return Route::Redirect(r);
        }
        match files {
            Some(mount) => Route::Files(mount),
            None => Route::App,
        }
    }

    /// `[app] root_path`: the app has the paths under it (gunicorn answers
    /// the others with an error, as its SCRIPT_NAME cannot be taken off).
    fn under_root_path(&self, path: &[u8]) -> bool {
        let root = self.root_path.as_bytes();
        if root.is_empty() {
            return true;
        }
        match path.strip_prefix(root) {
            Some(rest) => rest.is_empty() || rest[0] == b'/' || rest[0] == b'?',
            None => false,
        }
    }

    pub(crate) async fn act(
        &self,
        route: Route<'_>,
        session: &mut Session,
        ctx: &mut Ctx,
        decoded: &[u8],
        applied: &Applied<'_>,
    ) -> Result<bool> {
        if asks_for_websocket(session.req_header()) == Some(WebSocketAsk::Upgrade) {
            // The guard stopped checking this connection's bytes after the
            // handshake (they are frames if it succeeds): whatever the
            // answer, the connection ends with it.
            session.set_keepalive(None);
        }
        ctx.kind = route.kind();
        // The large arms are boxed: this future is built (and copied) for
        // every request, at the size of its largest arm.
        match route {
            Route::Refuse(status, why) => self.refuse(session, ctx, status, why).await,
            Route::ServerWide => self.server_wide(session, ctx).await,
            Route::Health => self.health(session, ctx).await,
            Route::AcmeChallenge => self.acme_challenge(session, ctx).await,
            Route::RateLimited(wait) => {
                ctx.retry_after = wait;
                self.refuse(session, ctx, 429, "Too Many Requests").await
            }
            Route::Redirect(r) => self.redirect(session, ctx, r).await,
            Route::Files(mount) => {
                // Given again only if nothing but the file decided it.
                let replayable = applied.rate.is_none()
                    && !self.may_be_acme_challenge(session.req_header().raw_path());
                let served = files::serve(
                    &self.state,
                    session,
                    mount,
                    &self.compression,
                    decoded,
                    replayable,
                );
                match Box::pin(served).await? {
                    Served::Done(status) => {
                        ctx.status = status;
                        Ok(true)
                    }
                    Served::Fallback => {
                        ctx.kind = Kind::App;
                        self.serve_app(session, ctx, applied).await
                    }
                }
            }
            Route::App => self.serve_app(session, ctx, applied).await,
            Route::Upgrade(ask) => Box::pin(self.serve_upgrade(session, ctx, ask)).await,
        }
    }

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

    async fn redirect(&self, session: &mut Session, ctx: &mut Ctx, r: Redirect) -> Result<bool> {
        match r {
            Redirect::BadHost => {
                let why = "Bad Request: no valid Host to redirect to";
                self.refuse(session, ctx, 400, why).await
            }
            Redirect::To { status, location } => {
                ctx.status = status;
                let body = format!("Moved to {location}\n");
                let extra = [("Location", location.as_str())];
                reply::text(&self.state, session, status, body, &extra, After::KeepAlive).await?;
                Ok(true)
            }
        }
    }

    /// Answers from the edge itself (413, 502, 503...).
    pub(crate) async fn refuse(
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
        let extra = match &retry_after {
            Some(v) => &[("Retry-After", v.as_str())][..],
            None => &[],
        };
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
            extra,
            after,
        )
        .await?;
        Ok(true)
    }
}

/// How a request asks for a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebSocketAsk {
    /// HTTP/1.1 `Upgrade: websocket` (RFC 6455): answered 101, then the
    /// connection carries frames.
    Upgrade,
    /// HTTP/2 extended CONNECT with `:protocol websocket` (RFC 8441): one
    /// stream answered 200, then its DATA frames carry the frames; the
    /// connection's other streams go on.
    ExtendedConnect,
}

fn asks_for_websocket(req: &pingora_http::RequestHeader) -> Option<WebSocketAsk> {
    if connect_kind(req) == Some(Connect::WebSocket) {
        return Some(WebSocketAsk::ExtendedConnect);
    }
    let upgrade = req.version == http::Version::HTTP_11
        && req.headers.get_all(http::header::UPGRADE).iter().any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        });
    upgrade.then_some(WebSocketAsk::Upgrade)
}

/// What a CONNECT request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connect {
    /// A tunnel to another host: corral is not a forward proxy (405, as
    /// pingora and nginx answer).
    Tunnel,
    /// Extended CONNECT for a WebSocket (RFC 8441), which the edge
    /// advertises with SETTINGS_ENABLE_CONNECT_PROTOCOL.
    WebSocket,
    /// Extended CONNECT for a protocol corral does not speak.
    Protocol,
}

fn connect_kind(req: &pingora_http::RequestHeader) -> Option<Connect> {
    if req.method != http::Method::CONNECT {
        return None;
    }
    // h2 puts `:protocol` in the request's extensions; HTTP/1 has none.
    Some(match req.extensions.get::<h2::ext::Protocol>() {
        None => Connect::Tunnel,
        Some(p) if p.as_str().eq_ignore_ascii_case("websocket") => Connect::WebSocket,
        Some(_) => Connect::Protocol,
    })
}
