//! `[limits] rate` and `burst`: a token bucket per client IP. A client may
//! send `burst` requests at once and `rate` per second after that; beyond
//! it the edge answers 429 with Retry-After, before reading the body.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets untouched this long are forgotten (they would be full again).
const FORGET_AFTER_SECS: f64 = 60.0;

/// Tokens left and when they were last topped up, per client.
type Buckets = HashMap<IpAddr, (f64, Instant)>;

pub struct RateLimit {
    per_sec: f64,
    capacity: f64,
    /// The buckets, and when idle ones were last swept out.
    buckets: Mutex<(Buckets, Instant)>,
}

impl RateLimit {
    pub fn new(per_sec: f64, burst: u32) -> Self {
        RateLimit {
            per_sec,
            capacity: 1.0 + f64::from(burst),
            buckets: Mutex::new((HashMap::new(), Instant::now())),
        }
    }

    /// `Ok` to go ahead, or `Err(seconds)` to wait before retrying.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (buckets, last_sweep) = &mut *guard;
        if now.duration_since(*last_sweep).as_secs_f64() > FORGET_AFTER_SECS {
            buckets.retain(|_, (_, t)| now.duration_since(*t).as_secs_f64() < FORGET_AFTER_SECS);
            *last_sweep = now;
        }
        let (tokens, last) = buckets.entry(ip).or_insert((self.capacity, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_sec).min(self.capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let rl = RateLimit::new(1.0, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(rl.check(ip).is_ok());
        assert!(rl.check(ip).is_ok());
        assert!(rl.check(ip).is_ok());
        assert_eq!(rl.check(ip), Err(1));
        assert!(rl.check("10.0.0.2".parse().unwrap()).is_ok());
    }
}
