//! The edge↔worker link, both sides' shared words. The edge writes each
//! request to a worker as HTTP/1.1 over a Unix socket, with what it knows
//! about the connection in `x-corral-*` fields (clients' own `x-corral-*`
//! fields are dropped first, so the app can trust these); the worker reads
//! them into the WSGI environ. Both sides name them from here.

/// The real client, `ip:port` (after `[server] trusted_proxies`).
pub const CLIENT: &str = "x-corral-client";
/// The listener the request came in on, `ip:port`.
pub const LOCAL: &str = "x-corral-local";
/// `http` or `https`.
pub const SCHEME: &str = "x-corral-scheme";
/// The client's protocol, e.g. `HTTP/2.0`.
pub const PROTOCOL: &str = "x-corral-protocol";
/// The edge's request id (also in the access and error logs).
pub const REQUEST_ID: &str = "x-corral-request-id";
/// `SUCCESS` when the client sent a certificate that verified.
pub const CLIENT_VERIFY: &str = "x-corral-client-verify";
/// The verified client certificate's subject DN, percent-encoded UTF-8.
pub const CLIENT_CERT: &str = "x-corral-client-cert";
/// `1` when the client can take a trailer section: any HTTP/2 client, an
/// HTTP/1.1 one that sent `TE: trailers` (RFC 9110 §10.1.4).
pub const TRAILERS: &str = "x-corral-trailers";
/// `1` when the body does not follow on the socket: the edge, which had
/// spooled it, passed its open file with the head (SCM_RIGHTS), and the
/// worker reads it from there (`edge::app::body_fd`). WSGI workers only.
pub const BODY_FD: &str = "x-corral-body-fd";
/// What every field above starts with.
pub const PREFIX: &str = "x-corral-";

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1).
/// Never forwarded from the client to the app; never taken from the app's
/// headers.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
];

/// Whether a (lower-case) field name is hop-by-hop.
pub fn is_hop_by_hop(lname: &str) -> bool {
    HOP_BY_HOP.contains(&lname)
}

/// Fields a trailer section must not carry (RFC 9110 §6.5.1): framing,
/// routing, authentication, caching and how to process the content are
/// settled by the head.
const NOT_IN_TRAILERS: [&str; 16] = [
    "content-length",
    "content-encoding",
    "content-type",
    "content-range",
    "host",
    "set-cookie",
    "cache-control",
    "expires",
    "date",
    "location",
    "vary",
    "age",
    "authorization",
    "www-authenticate",
    "proxy-authenticate",
    "retry-after",
];

/// Whether a (lower-case) field may travel in a trailer section; the rest
/// are dropped on both sides of the link.
pub fn trailer_allowed(lname: &str) -> bool {
    !is_hop_by_hop(lname) && !NOT_IN_TRAILERS.contains(&lname) && !lname.starts_with(PREFIX)
}

/// How long open WebSockets live on after a stop, recycle or reload
/// begins: the graceful timeout less a second to say goodbye (1001) before
/// the deadline, but at least half of it. The edge (its tunnels) and the
/// ASGI worker (its own sockets) both follow this.
pub fn websockets_close_after(graceful: std::time::Duration) -> std::time::Duration {
    graceful
        .saturating_sub(std::time::Duration::from_secs(1))
        .max(graceful / 2)
}

pub mod framer;
pub mod receipt;
pub mod request;
pub mod withdraw;
