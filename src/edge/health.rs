//! `[server] health_path`, answered by the edge itself for load balancers
//! and Kubernetes probes: 200 while at least one worker takes requests and
//! the site is not going away, 503 otherwise, with the facts as JSON. It
//! goes 503 first when a stop begins (`[server] drain_delay`), while every
//! other request is still served, so a balancer stops sending before the
//! listeners close.

use crate::edge::reply::{self, After};
use crate::edge::request::{Ctx, Edge};
use bytes::Bytes;
use pingora_core::Result;
use pingora_proxy::Session;

/// What the site can do right now.
#[derive(Debug, PartialEq, Eq)]
enum Health {
    Ready,
    /// SIGTERM arrived: draining before a stop (or this edge stopping).
    Draining,
    /// No worker is up: booting, or every one crashed.
    NoWorkers,
}

impl Health {
    fn decide(workers_ready: usize, going: bool) -> Health {
        match (going, workers_ready) {
            (true, _) => Health::Draining,
            (false, 0) => Health::NoWorkers,
            (false, _) => Health::Ready,
        }
    }

    fn status(&self) -> u16 {
        match self {
            Health::Ready => 200,
            Health::Draining | Health::NoWorkers => 503,
        }
    }

    fn word(&self) -> &'static str {
        match self {
            Health::Ready => "ready",
            Health::Draining => "draining",
            Health::NoWorkers => "no workers ready",
        }
    }
}

impl Edge {
    /// The path alone decides (a probe may add a query string).
    pub(crate) fn is_health_check(&self, target: &[u8]) -> bool {
        let path = target.split(|&b| b == b'?').next().unwrap_or_default();
        !self.health_path.is_empty() && path == self.health_path.as_bytes()
    }

    pub(crate) async fn health(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            ctx.status = 405;
            let allow = [("Allow", "GET, HEAD")];
            let why = "Method Not Allowed: the health path takes GET and HEAD\n";
            reply::text(&self.state, session, 405, why, &allow, After::Close).await?;
            return Ok(true);
        }
        let census = self.pool.census();
        let ready = census.idle + census.busy;
        let (target, going) = self.state.health_facts();
        let health = Health::decide(ready, going);
        let body = serde_json::json!({
            "status": health.word(),
            "workers_ready": ready,
            "workers_wanted": target,
            "queued": census.queued,
        });
        ctx.status = health.status();
        let body = (
            "application/json",
            Bytes::from(format!("{body}\n").into_bytes()),
        );
        reply::uncached(&self.state, session, ctx.status, body).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn going_away_wins_over_ready_workers() {
        assert_eq!(Health::decide(4, false), Health::Ready);
        assert_eq!(Health::decide(4, true), Health::Draining);
        assert_eq!(Health::decide(0, false), Health::NoWorkers);
        assert_eq!(Health::decide(0, false).status(), 503);
        assert_eq!(Health::decide(1, false).status(), 200);
    }
}
