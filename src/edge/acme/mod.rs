//! Automatic HTTPS (`[tls.acme]`): the edge obtains and renews its own
//! certificate from an ACME CA (Let's Encrypt, or any RFC 8555 CA), in the
//! background, so the site serves at once: HTTP at start, HTTPS for the
//! ACME hosts as soon as the first certificate arrives (until then their
//! handshakes fail with a log line, as Caddy's do).
//!
//! - `schedule`: when to order (renewal window, jitter, backoff);
//! - `order`: one order with instant-acme;
//! - `served`: the certificate in use and the challenge answers, read by
//!   `conn::tls` (TLS-ALPN-01) and `route` (HTTP-01);
//! - `store`: `state_dir`, shared by restarts, edges and instances; a file
//!   lock lets one of them order while the others pick the result up.

pub mod client;
mod http01;
pub mod order;
pub mod schedule;
pub mod served;
pub mod store;

use crate::config::AcmeSite;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use schedule::{Plan, Why};
use served::Served;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{error, info, warn};

/// How often the stored certificate is looked at: another instance (or
/// this instance's next edge) may have renewed it.
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// Longest an order may take (it holds the lock meanwhile).
const ORDER_LIMIT: Duration = Duration::from_secs(300);

pub struct Manager {
    pub site: AcmeSite,
    pub served: Arc<Served>,
    pub state: Arc<crate::edge::state::EdgeState>,
}

/// What one pass of the loop did.
enum Pass {
    /// The certificate in hand is good until then (ours or another's).
    Keep(SystemTime),
    /// An order is due but a failed one was too recent.
    Wait(SystemTime),
    /// Another process holds the lock and is ordering.
    Busy,
    Issued,
    Failed(String),
}

#[async_trait]
impl BackgroundService for Manager {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.run() => {}
            _ = shutdown.changed() => {}
        }
    }
}

impl Manager {
    /// Until this edge drains: a successor edge (reload) or another
    /// instance takes over, and an old config must not order.
    async fn run(&self) {
        let jitter_key = std::collections::hash_map::RandomState::new();
        let mut said_busy = false;
        while !self.state.is_draining() {
            let now = SystemTime::now();
            let wake = match self.pass(&jitter_key).await {
                Pass::Keep(t) | Pass::Wait(t) => t,
                Pass::Issued => {
                    said_busy = false;
                    now
                }
                Pass::Busy => {
                    if !said_busy {
                        info!("acme: another corral holds the lock in {}; waiting for its certificate", self.site.state_dir.display());
                        said_busy = true;
                    }
                    now + LOOK_EVERY
                }
                Pass::Failed(why) => self.failed(why),
            };
            let pause = wake.duration_since(now).unwrap_or_default();
            tokio::time::sleep(pause.min(LOOK_EVERY)).await;
        }
    }

    async fn pass(&self, jitter_key: &impl BuildHasher) -> Pass {
        self.pick_up();
        let why = match self.plan(jitter_key, SystemTime::now()) {
            Plan::Keep(at) => {
                self.note(Some(at), None);
                return Pass::Keep(at);
            }
            Plan::Order(why) => why,
        };
        if let Some(wait) = self.backing_off() {
            return wait;
        }
        let _lock = match self.served.store.try_lock() {
            Ok(Some(lock)) => lock,
            Ok(None) => return Pass::Busy,
            Err(e) => return Pass::Failed(e),
        };
        // The holder before us may have just finished, or just failed.
        self.pick_up();
        if let Plan::Keep(at) = self.plan(jitter_key, SystemTime::now()) {
            return Pass::Keep(at);
        }
        if let Some(wait) = self.backing_off() {
            return wait;
        }
        let issued = self.order(why).await;
        if let (Pass::Issued, Plan::Order(why)) =
            (&issued, self.plan(jitter_key, SystemTime::now()))
        {
            // Never order again at once: that loop would spend the CA's
            // duplicate-certificate limit (Let's Encrypt: 5 a week).
            return Pass::Failed(format!("the new certificate is already due ({why})"));
        }
        issued
    }

    /// The backoff after failed orders, shared through state_dir with
    /// every process that orders for these hosts (and kept over restarts).
    fn backing_off(&self) -> Option<Pass> {
        let (_, retry_at) = self.served.store.read_retry();
        (retry_at > SystemTime::now()).then_some(Pass::Wait(retry_at))
    }

    /// Counts a failed order and says when the next may run.
    fn failed(&self, why: String) -> SystemTime {
        let store = &self.served.store;
        let failures = store.read_retry().0.saturating_add(1);
        let pause = schedule::backoff(failures);
        let at = SystemTime::now() + pause;
        if let Err(e) = store.write_retry(failures, at) {
            warn!("acme: cannot record the backoff: {e}");
        }
        self.say_failed(&why, pause);
        self.note(Some(at), Some(why));
        at
    }

    async fn order(&self, why: Why) -> Pass {
        info!(
            "acme: ordering a certificate for {} from {} by {} ({why})",
            self.site.hosts.join(", "),
            self.site.directory,
            self.site.challenge.as_str()
        );
        let issued = match tokio::time::timeout(
            ORDER_LIMIT,
            order::obtain(&self.site, &self.served),
        )
        .await
        {
            Ok(Ok(issued)) => issued,
            Ok(Err(e)) => return Pass::Failed(e),
            Err(_) => return Pass::Failed(format!("the CA took over {} s", ORDER_LIMIT.as_secs())),
        };
        if let Err(e) = self.usable(&issued) {
            return Pass::Failed(e);
        }
        if let Err(e) = self
            .served
            .store
            .save_cert(&issued.chain_pem, &issued.key_pem)
        {
            return Pass::Failed(e);
        }
        self.served.store.clear_retry();
        self.pick_up();
        Pass::Issued
    }

    /// What the CA sent parses and covers every host, before it replaces
    /// a stored certificate that works.
    fn usable(&self, issued: &order::Issued) -> Result<(), String> {
        let pem = store::combine(&issued.chain_pem, &issued.key_pem);
        let (_, facts) = served::parse(pem.as_bytes())
            .map_err(|e| format!("the CA's certificate is unusable: {e}"))?;
        match self.site.hosts.iter().find(|h| !facts.names.contains(h)) {
            Some(h) => Err(format!("the CA's certificate does not cover {h}")),
            None => Ok(()),
        }
    }

    fn plan(&self, jitter_key: &impl BuildHasher, now: SystemTime) -> Plan {
        let facts = self.served.facts();
        let jitter = facts.as_ref().map_or(0.0, |f| {
            (jitter_key.hash_one(&f.serial) >> 11) as f64 / (1u64 << 53) as f64
        });
        schedule::plan(
            facts.as_ref(),
            &self.site.hosts,
            self.site.renew_before,
            now,
            jitter,
        )
    }

    /// Installs a certificate that appeared in the store.
    fn pick_up(&self) {
        match self.served.reload() {
            Ok(Some(f)) => {
                info!(
                    "acme: serving the certificate for {} from {} (serial {}, valid until {})",
                    f.names.join(", "),
                    f.issuer,
                    f.serial,
                    httpdate::fmt_http_date(f.not_after)
                );
                self.note(None, None);
            }
            Ok(None) => {}
            Err(e) => warn!("acme: the stored certificate is unusable, ordering anew: {e}"),
        }
    }

    fn say_failed(&self, why: &str, pause: Duration) {
        let hosts = self.site.hosts.join(", ");
        let again = pause.as_secs();
        match self.served.facts() {
            None => error!("acme: no certificate for {hosts}: {why}; trying again in {again}s"),
            Some(f) => error!(
                "acme: renewing the certificate for {hosts} failed: {why}; still serving the current one \
                 (valid until {}); trying again in {again}s",
                httpdate::fmt_http_date(f.not_after)
            ),
        }
    }

    fn note(&self, next: Option<SystemTime>, error: Option<String>) {
        if let Ok(mut p) = self.served.progress.lock() {
            p.next = next;
            p.last_error = error;
        }
    }
}
