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

pub struct Manager {
    pub site: AcmeSite,
    pub served: Arc<Served>,
}

/// What one pass of the loop did.
enum Pass {
    /// Nothing to do before this time.
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
    async fn run(&self) {
        let jitter_key = std::collections::hash_map::RandomState::new();
        let mut failures = 0u32;
        let mut retry_at = SystemTime::UNIX_EPOCH;
        let mut said_busy = false;
        loop {
            let pass = self.pass(&jitter_key, retry_at).await;
            let now = SystemTime::now();
            let wake = match pass {
                Pass::Wait(t) => t,
                Pass::Issued => {
                    failures = 0;
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
                Pass::Failed(why) => {
                    failures += 1;
                    let pause = schedule::backoff(failures);
                    retry_at = now + pause;
                    self.say_failed(&why, pause);
                    self.note(Some(retry_at), Some(why));
                    retry_at
                }
            };
            let pause = wake.duration_since(now).unwrap_or_default();
            tokio::time::sleep(pause.min(LOOK_EVERY)).await;
        }
    }

    async fn pass(&self, jitter_key: &impl BuildHasher, retry_at: SystemTime) -> Pass {
        self.pick_up();
        let now = SystemTime::now();
        let why = match self.plan(jitter_key, now) {
            Plan::Keep(at) => {
                self.note(Some(at), None);
                return Pass::Wait(at);
            }
            Plan::Order(_) if retry_at > now => return Pass::Wait(retry_at),
            Plan::Order(why) => why,
        };
        let _lock = match self.served.store.try_lock() {
            Ok(Some(lock)) => lock,
            Ok(None) => return Pass::Busy,
            Err(e) => return Pass::Failed(e),
        };
        // The holder before us may have just finished.
        self.pick_up();
        if let Plan::Keep(at) = self.plan(jitter_key, SystemTime::now()) {
            return Pass::Wait(at);
        }
        self.order(why).await
    }

    async fn order(&self, why: Why) -> Pass {
        info!(
            "acme: ordering a certificate for {} from {} by {} ({why})",
            self.site.hosts.join(", "),
            self.site.directory,
            self.site.challenge.as_str()
        );
        let issued = match order::obtain(&self.site, &self.served).await {
            Ok(issued) => issued,
            Err(e) => return Pass::Failed(e),
        };
        if let Err(e) = self
            .served
            .store
            .save_cert(&issued.chain_pem, &issued.key_pem)
        {
            return Pass::Failed(e);
        }
        self.pick_up();
        Pass::Issued
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
