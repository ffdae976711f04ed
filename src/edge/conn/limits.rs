//! `max_connections` and `max_connections_per_ip`: how many client
//! connections the edge holds at once, in all and from one address.
//!
//! The total is a semaphore the accept loops wait on, so past the limit new
//! connections wait in the kernel's backlog (as with a busy nginx) instead
//! of being dropped. The per-address count is answered 503 (nginx's
//! `limit_conn` default). A `Ticket` lives inside the connection's stream
//! and gives both back when pingora drops it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct ConnLimits {
    total: Arc<Semaphore>,
    per_ip: usize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place; dropping it frees the place.
pub struct Ticket {
    _permit: Option<OwnedSemaphorePermit>,
    ip: Option<(Arc<ConnLimits>, IpAddr)>,
}

impl ConnLimits {
    /// `max` 0 means no limit on the total; `per_ip` 0 none per address.
    pub fn new(max: usize, per_ip: usize) -> Arc<Self> {
        let max = if max == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max
        };
        Arc::new(ConnLimits {
            total: Arc::new(Semaphore::new(max)),
            per_ip,
            by_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for a free place in the total (before `accept`).
    pub async fn place(&self) -> Option<OwnedSemaphorePermit> {
        self.total.clone().acquire_owned().await.ok()
    }

    /// Counts a connection from `ip`; `Err` when that address already has
    /// `max_connections_per_ip` (the ticket is still returned, to be held
    /// while the refusal is written).
    pub fn admit(
        self: &Arc<Self>,
        permit: Option<OwnedSemaphorePermit>,
        ip: IpAddr,
    ) -> Result<Ticket, Ticket> {
        if self.per_ip == 0 {
            return Ok(Ticket {
                _permit: permit,
                ip: None,
            });
        }
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = by_ip.entry(ip).or_insert(0);
        if *count >= self.per_ip {
            return Err(Ticket {
                _permit: permit,
                ip: None,
            });
        }
        *count += 1;
        Ok(Ticket {
            _permit: permit,
            ip: Some((self.clone(), ip)),
        })
    }
}

/// `max_connections` as this process's descriptor limit allows it. A
/// connection may hold two descriptors (the client's, and a worker's or a
/// file's), and some are kept for listeners, idle worker connections and
/// spool files. Past what the limit allows, connections wait in the listen
/// backlog, where the kernel holds them, instead of being accepted and then
/// answered 503 for want of a descriptor to reach a worker. `max` 0 (no
/// limit) becomes what the descriptors allow.
pub fn within_fd_limit(max: usize) -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max;
    };
    let allowed = fd_budget(soft);
    if max == 0 {
        return allowed;
    }
    if allowed < max {
        let needed = max.saturating_mul(2).saturating_add(reserve(soft) as usize);
        let line = format!(
            "[limits] max_connections = {max} needs about {needed} file descriptors (two per \
             connection), but the limit (RLIMIT_NOFILE) is {soft}: the edge holds at most \
             {allowed} connections at once and the rest wait to be accepted; raise the limit \
             (systemd LimitNOFILE=, ulimit -n) or lower max_connections"
        );
        // Most connections are idle keep-alives holding one descriptor, so
        // a limit that gives each one is only worth a note (the default
        // 10000 on a 20000 hard limit, say); below that, a warning.
        if (soft as usize) < max.saturating_add(256) {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
    }
    max.min(allowed)
}

/// Connections `soft` descriptors carry: two each, after the reserve.
fn fd_budget(soft: u64) -> usize {
    let pairs = soft.saturating_sub(reserve(soft)) / 2;
    usize::try_from(pairs)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS)
}

/// Descriptors kept aside: listeners, the runtime's own, log and spool
/// files. A slim share: past it the edge still answers 503 and says why.
fn reserve(soft: u64) -> u64 {
    (soft / 128).clamp(32, 256)
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((limits, ip)) = self.ip.take() {
            let mut by_ip = limits.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = by_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_ip_places_come_back_when_tickets_drop() {
        let limits = ConnLimits::new(0, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let a = limits.admit(limits.place().await, ip).ok().unwrap();
        let _b = limits.admit(limits.place().await, ip).ok().unwrap();
        assert!(limits.admit(limits.place().await, ip).is_err());
        assert!(limits.admit(limits.place().await, other).is_ok());
        drop(a);
        assert!(limits.admit(limits.place().await, ip).is_ok());
    }

    #[tokio::test]
    async fn the_total_waits_for_a_free_place() {
        let limits = ConnLimits::new(1, 0);
        let first = limits.place().await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), limits.place());
        assert!(waiting.await.is_err(), "a second place was given past max");
        drop(first);
        assert!(limits.place().await.is_some());
    }
}
