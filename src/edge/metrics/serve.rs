//! The metrics listener: `GET /metrics` through pingora's own HTTP/1 code
//! (a `ServeHttp` app), on the socket the master bound; `GET /` is the
//! status page (`status.html`, self-contained: it reads `/metrics` and
//! `/status.json` every second). Anything else is a 404; nothing here
//! reaches the site's request path or its access log.

use super::Metrics;
use crate::edge::app::pool::Pool;
use crate::edge::inherited::accept_until_stopped;
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

pub struct MetricsApp {
    pub metrics: Arc<Metrics>,
    pub pool: Arc<Pool>,
    pub state: Arc<crate::edge::state::EdgeState>,
    pub inspector: Arc<crate::edge::status::Inspector>,
}

/// The status page, built into the binary so it works offline.
const STATUS_PAGE: &str = include_str!("status.html");

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => {
                let hits = self.state.files_cache.hits();
                let body = self.metrics.render(self.pool.census(), hits);
                plain(200, body, "text/plain; version=0.0.4; charset=utf-8")
            }
            "/status.json" => {
                let status = self.inspector.status();
                let body = serde_json::to_string(&status).unwrap_or_default();
                plain(200, body, "application/json")
            }
            "/" => plain(200, STATUS_PAGE.into(), "text/html; charset=utf-8"),
            _ => plain(
                404,
                "Not Found: metrics are at /metrics, the status page at /\n".into(),
                "text/plain",
            ),
        }
    }
}

fn plain(status: u16, body: String, kind: &str) -> Response<Vec<u8>> {
    let body = body.into_bytes();
    Response::builder()
        .status(status)
        .header("Content-Type", kind)
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store")
        .body(body)
        .unwrap_or_default()
}

/// Accepts on the metrics socket for the edge's life.
pub struct MetricsListener {
    pub app: Arc<MetricsApp>,
    pub fd: Mutex<Option<RawFd>>,
}

#[async_trait]
impl BackgroundService for MetricsListener {
    async fn start(&self, shutdown: ShutdownWatch) {
        let serve = |tcp| {
            let app = self.app.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                // Keep-alive: the same connection serves the next scrape.
                let mut stream: Option<pingora_core::protocols::Stream> =
                    Some(Box::new(L4Stream::from(tcp)));
                while let Some(s) = stream {
                    stream = app.process_new(s, &shutdown).await;
                }
            });
        };
        let state = &self.app.state;
        accept_until_stopped::<TcpListener>(&self.fd, "metrics listener", state, serve).await;
    }
}
