//! Rules that may refuse or redirect a request before it is served:
//! per-route limits, the rate limit, the redirect to HTTPS.

pub(crate) mod rate_limit;
pub(crate) mod redirect;
pub(crate) mod routes;
