//! When to order: a pure decision from the certificate in hand, the hosts
//! it must cover and the clock, so every rule is a unit test. Renewal is
//! spread (jitter) so a fleet that got its certificates together does not
//! renew together, and a failing CA is retried with growing pauses, never
//! in a loop (Let's Encrypt allows 5 failed validations per host an hour).

use crate::config::tls::CertFacts;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Good until then; look again at that time.
    Keep(SystemTime),
    Order(Why),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    NoCertificate,
    /// The stored certificate lacks a configured host.
    Uncovered(String),
    /// Within `renew_before` of its end (or past it).
    Renewal,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NoCertificate => f.write_str("no certificate yet"),
            Why::Uncovered(h) => write!(f, "the stored certificate does not cover {h}"),
            Why::Renewal => f.write_str("the certificate is due for renewal"),
        }
    }
}

/// `jitter` in [0, 1) picks the moment within the renewal window's first
/// tenth (at most a day) for this certificate.
pub fn plan(
    cert: Option<&CertFacts>,
    hosts: &[String],
    renew_before: Duration,
    now: SystemTime,
    jitter: f64,
) -> Plan {
    let Some(cert) = cert else {
        return Plan::Order(Why::NoCertificate);
    };
    if let Some(h) = hosts.iter().find(|h| !cert.names.contains(h)) {
        return Plan::Order(Why::Uncovered(h.clone()));
    }
    let at = renewal_time(cert, renew_before, jitter);
    if at <= now {
        Plan::Order(Why::Renewal)
    } else {
        Plan::Keep(at)
    }
}

/// `not_after - renew_before`, a little earlier by the jitter. When
/// `renew_before` is longer than the certificate's whole life (a CA with
/// short-lived certificates, or a typo), two thirds into its life instead:
/// otherwise every new certificate would be due at once and corral would
/// order in a loop.
pub fn renewal_time(cert: &CertFacts, renew_before: Duration, jitter: f64) -> SystemTime {
    let life = cert
        .not_after
        .duration_since(cert.not_before)
        .unwrap_or_default();
    if renew_before >= life {
        return cert.not_before + life.mul_f64(2.0 / 3.0);
    }
    let spread = (renew_before / 10).min(Duration::from_secs(86_400));
    let at = cert.not_after - renew_before - spread.mul_f64(jitter.clamp(0.0, 1.0));
    // Never in the first third of its life: a window just short of the
    // life would otherwise make each new certificate due at once.
    at.max(cert.not_before + life / 3)
}

/// The pause after the `failures`-th failed order in a row: 2 minutes,
/// doubling, at most 12 hours.
pub fn backoff(failures: u32) -> Duration {
    let first = Duration::from_secs(120);
    let most = Duration::from_secs(12 * 3600);
    first
        .checked_mul(1u32 << failures.saturating_sub(1).min(16))
        .map_or(most, |d| d.min(most))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn cert(issued: SystemTime, days: u32) -> CertFacts {
        CertFacts {
            names: vec!["a.test".into(), "b.test".into()],
            issuer: "CA".into(),
            serial: "01".into(),
            not_before: issued,
            not_after: issued + DAY * days,
        }
    }

    #[test]
    fn orders_without_a_certificate_or_when_a_host_is_missing() {
        let now = SystemTime::now();
        let hosts = vec!["a.test".to_string(), "c.test".to_string()];
        assert_eq!(
            plan(None, &hosts, DAY * 30, now, 0.5),
            Plan::Order(Why::NoCertificate)
        );
        let c = cert(now, 90);
        assert_eq!(
            plan(Some(&c), &hosts, DAY * 30, now, 0.5),
            Plan::Order(Why::Uncovered("c.test".into()))
        );
    }

    #[test]
    fn keeps_a_fresh_certificate_until_its_window_opens() {
        let issued = SystemTime::now() - DAY * 10;
        let c = cert(issued, 90);
        let hosts = vec!["a.test".to_string()];
        let Plan::Keep(at) = plan(Some(&c), &hosts, DAY * 30, SystemTime::now(), 0.0) else {
            panic!("a 10-day-old 90-day certificate is not due");
        };
        assert_eq!(at, c.not_after - DAY * 30);
        let late = c.not_after - DAY * 29;
        assert_eq!(
            plan(Some(&c), &hosts, DAY * 30, late, 0.0),
            Plan::Order(Why::Renewal)
        );
    }

    #[test]
    fn jitter_moves_renewal_earlier_within_a_tenth_of_the_window() {
        let c = cert(SystemTime::now(), 90);
        let none = renewal_time(&c, DAY * 30, 0.0);
        let most = renewal_time(&c, DAY * 30, 0.999);
        assert!(most < none && none.duration_since(most).unwrap() <= DAY * 3);
    }

    #[test]
    fn a_window_longer_than_the_life_renews_at_two_thirds_not_at_once() {
        let now = SystemTime::now();
        let c = CertFacts {
            not_after: now + Duration::from_secs(90),
            not_before: now,
            ..cert(now, 1)
        };
        let at = renewal_time(&c, DAY * 30, 0.3);
        assert_eq!(at, now + Duration::from_secs(60));
        let hosts = vec!["a.test".to_string()];
        assert!(matches!(
            plan(Some(&c), &hosts, DAY * 30, now, 0.3),
            Plan::Keep(_)
        ));
    }

    #[test]
    fn a_window_just_short_of_the_life_still_waits_a_third_of_it() {
        let now = SystemTime::now();
        let c = cert(now, 7);
        let at = renewal_time(&c, Duration::from_secs(6 * 86_400 + 43_200), 0.9);
        assert!(at >= now + (DAY * 7) / 3, "renewed too early");
    }

    #[test]
    fn failures_back_off_from_two_minutes_to_twelve_hours() {
        assert_eq!(backoff(1), Duration::from_secs(120));
        assert_eq!(backoff(2), Duration::from_secs(240));
        assert_eq!(backoff(5), Duration::from_secs(1920));
        assert_eq!(backoff(40), Duration::from_secs(12 * 3600));
    }
}
