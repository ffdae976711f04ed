//! Before pingora sees a byte: accepting (connection limits, PROXY
//! protocol, TLS) and the guard that enforces the HTTP/1 framing rules and
//! deadlines on every connection.

pub(crate) mod accept;
pub(crate) mod guard;
pub(crate) mod limits;
pub(crate) mod proxy_protocol;
pub(crate) mod shortcut;
pub(crate) mod threads;
pub(crate) mod tls;
