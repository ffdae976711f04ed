//! `[[limits.route]]`: body size, body time and request rate for a URL
//! prefix, over the site-wide `[limits]` (nginx's per-`location`
//! `client_max_body_size`, `client_body_timeout` and `limit_req`).
//!
//! Prefixes are matched on the percent-decoded path, as the app will see
//! it, so `/%75pload/` cannot slip past the limits of `/upload/`.

use crate::config::schema::Limits;
use crate::config::units::parse_rate;
use crate::edge::admit::rate_limit::RateLimit;
use std::time::Duration;

/// The limits that apply to one request.
pub struct Applied<'a> {
    pub max_body: u64,
    /// The `[[limits.route]]` path whose `max_body` applied, if one did:
    /// a 413 names the key to raise.
    pub max_body_route: Option<&'a str>,
    pub body_timeout: Duration,
    pub rate: Option<&'a RateLimit>,
}

struct Route {
    path: String,
    prefix: Vec<u8>,
    max_body: Option<u64>,
    body_timeout: Option<Duration>,
    /// `None`: the site-wide rate; `Some(None)`: no rate limit here.
    rate: Option<Option<RateLimit>>,
}

pub struct Routes {
    /// Longest prefix first.
    routes: Vec<Route>,
    max_body: u64,
    body_timeout: Duration,
    rate: Option<RateLimit>,
}

fn rate_limit(rate: &str, burst: u32) -> Option<RateLimit> {
    parse_rate(rate).ok().map(|r| RateLimit::new(r, burst))
}

impl Routes {
    /// From validated `[limits]`.
    pub fn new(limits: &Limits) -> Self {
        let mut routes: Vec<Route> = limits
            .route
            .iter()
            .map(|r| Route {
                path: r.path.clone(),
                prefix: r.path.as_bytes().to_vec(),
                max_body: r.max_body.map(|b| b.0),
                body_timeout: r.body_timeout.map(|t| t.0),
                rate: r
                    .rate
                    .as_deref()
                    .map(|rate| rate_limit(rate, r.burst.unwrap_or(0))),
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Routes {
            routes,
            max_body: limits.max_body.0,
            body_timeout: limits.body_timeout.0,
            rate: rate_limit(&limits.rate, limits.burst),
        }
    }

    /// No `[[limits.route]]`: the path need not be decoded.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The limits for a request to `decoded` (the percent-decoded path).
    pub fn for_path(&self, decoded: &[u8]) -> Applied<'_> {
        let route = self.routes.iter().find(|r| {
            decoded.starts_with(&r.prefix)
                || r.prefix.strip_suffix(b"/").is_some_and(|p| decoded == p)
        });
        Applied {
            max_body: route.and_then(|r| r.max_body).unwrap_or(self.max_body),
            max_body_route: route
                .filter(|r| r.max_body.is_some())
                .map(|r| r.path.as_str()),
            body_timeout: route
                .and_then(|r| r.body_timeout)
                .unwrap_or(self.body_timeout),
            rate: match route.and_then(|r| r.rate.as_ref()) {
                Some(own) => own.as_ref(),
                None => self.rate.as_ref(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::RouteLimits;
    use crate::config::units::{ByteSize, Seconds};

    #[test]
    fn the_longest_decoded_prefix_wins() {
        let limits = Limits {
            route: vec![
                RouteLimits {
                    path: "/upload/".into(),
                    max_body: Some(ByteSize(1 << 30)),
                    ..Default::default()
                },
                RouteLimits {
                    path: "/upload/avatars/".into(),
                    max_body: Some(ByteSize(1 << 20)),
                    body_timeout: Some(Seconds(Duration::from_secs(5))),
                    rate: Some(String::new()),
                    ..Default::default()
                },
            ],
            rate: "10r/s".into(),
            ..Limits::default()
        };
        let routes = Routes::new(&limits);
        let for_path = |raw: &[u8]| routes.for_path(&crate::proto::target::decode(raw));
        let site = for_path(b"/other");
        assert_eq!(site.max_body, limits.max_body.0);
        assert!(site.rate.is_some());
        assert_eq!(for_path(b"/upload/big").max_body, 1 << 30);
        assert_eq!(for_path(b"/%75pload/big").max_body, 1 << 30);
        assert_eq!(for_path(b"/upload").max_body, 1 << 30);
        let avatars = for_path(b"/upload/avatars/me.png");
        assert_eq!(avatars.max_body, 1 << 20);
        assert_eq!(avatars.max_body_route, Some("/upload/avatars/"));
        assert_eq!(site.max_body_route, None);
        assert_eq!(avatars.body_timeout, Duration::from_secs(5));
        assert!(avatars.rate.is_none(), "rate = \"\" exempts the route");
        assert_eq!(for_path(b"/upload/big").body_timeout, limits.body_timeout.0);
    }
}
