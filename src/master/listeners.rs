//! The master binds the site's listening sockets once, before forking, and
//! keeps them for its whole life. Each edge process gets them by
//! inheritance, so an edge that crashes and is respawned never closes the
//! port: connections wait in the kernel's backlog meanwhile instead of being
//! refused. (It also means privileged ports work with `[server] user`.)

use crate::config::Site;
use anyhow::anyhow;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use nix::sys::socket::{getsockname, getsockopt};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use tracing::{info, warn};

/// nginx's default backlog on Linux is 511; a little deeper absorbs edge restarts.
const BACKLOG: i32 = 1024;

pub struct Listeners {
    socks: Vec<(SocketAddr, OwnedFd)>,
    /// Passed by systemd (socket activation) and not yet taken by an
    /// address of the config.
    inherited: Vec<(SocketAddr, OwnedFd)>,
}

/// Every address the site listens on, with the key that names it.
fn addresses(site: &Site) -> Vec<(String, SocketAddr)> {
    let plain = site
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("server.listen[{i}]"), *a));
    let tls = site.tls.iter().flat_map(|t| {
        t.listen
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("tls.listen[{i}]"), *a))
    });
    let metrics = site
        .metrics_listen
        .map(|a| ("metrics.listen".to_string(), a));
    plain.chain(tls).chain(metrics).collect()
}

impl Listeners {
    pub fn bind_all(site: &Site) -> anyhow::Result<Self> {
        use super::{systemd, upgrade};
        let mut inherited = by_address(systemd::inherited_listeners(), "systemd");
        let upgrading = upgrade::inherited_listeners();
        let from = if upgrading.is_empty() {
            "systemd"
        } else {
            "the previous corral"
        };
        inherited.extend(by_address(upgrading, from));
        let mut l = Listeners {
            socks: Vec::new(),
            inherited,
        };
        l.bind_new(site)?;
        for (addr, _) in l.inherited.drain(..) {
            warn!("{from} passed a socket for {addr}, which no listen address in the config names; closing it");
        }
        Ok(l)
    }

    /// The socket passed for `addr` (by systemd or an upgrading corral).
    fn take_inherited(&mut self, addr: &SocketAddr) -> Option<OwnedFd> {
        let pos = self.inherited.iter().position(|(a, _)| a == addr)?;
        info!("{addr}: using the listening socket passed to this process");
        Some(self.inherited.swap_remove(pos).1)
    }

    /// A reload: binds the addresses `site` adds (all or none), returning
    /// them; the ones it drops are closed later by [`Listeners::keep_only`].
    pub fn bind_new(&mut self, site: &Site) -> anyhow::Result<Vec<SocketAddr>> {
        let mut added: Vec<(SocketAddr, OwnedFd)> = Vec::new();
        for (key, addr) in addresses(site) {
            if self.socks.iter().chain(&added).any(|(a, _)| *a == addr) {
                continue;
            }
            if let Some(fd) = self.take_inherited(&addr) {
                added.push((addr, fd));
                continue;
            }
            match bind_one(&addr) {
                Ok(fd) => added.push((addr, fd)),
                Err(e) => return Err(cannot_listen(site, &key, &addr, e)),
            }
        }
        let addrs = added.iter().map(|(a, _)| *a).collect();
        self.socks.extend(added);
        Ok(addrs)
    }

    /// Closes the listeners `site` no longer has (the edges that still
    /// hold them close their copies when they drain).
    pub fn keep_only(&mut self, site: &Site) {
        let wanted = addresses(site);
        self.socks
            .retain(|(a, _)| wanted.iter().any(|(_, w)| w == a));
    }

    /// A failed reload: lets go of what it had bound.
    pub fn release(&mut self, addrs: &[SocketAddr]) {
        self.socks.retain(|(a, _)| !addrs.contains(a));
    }

    /// Closes every listening socket: at a stop, so that new connections
    /// are refused at once instead of waiting in a backlog nobody accepts
    /// from (each edge closes its own copies when it stops accepting).
    pub fn close_all(&mut self) {
        self.socks.clear();
    }

    /// `(address as pingora spells it, fd)` for each listener.
    pub fn fds(&self) -> Vec<(SocketAddr, RawFd)> {
        self.socks
            .iter()
            .map(|(a, fd)| (*a, fd.as_raw_fd()))
            .collect()
    }
}

/// "http://127.0.0.1:8080 (h2c), https://[::]:8443 (PROXY protocol)":
/// what an operator needs to know a listener is there, and how it speaks.
pub fn describe(site: &Site) -> String {
    addresses(site)
        .into_iter()
        .map(|(key, addr)| {
            if key.starts_with("metrics.") {
                return format!("metrics on http://{addr}/metrics");
            }
            let tls = key.starts_with("tls.");
            let mut notes = Vec::new();
            if !tls && site.config.server.h2c {
                notes.push("h2c");
            }
            if site.proxy_protocol.contains(&addr) {
                notes.push("PROXY protocol");
            }
            let scheme = if tls { "https" } else { "http" };
            if notes.is_empty() {
                format!("{scheme}://{addr}")
            } else {
                format!("{scheme}://{addr} ({})", notes.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `corral check` makes of the listen addresses: each is bound and let
/// go. A port in use is only a warning, as `nginx -t` passes beside a
/// running nginx: it is most often this site's own server, or systemd
/// holding the socket it will pass (`ExecStartPre=corral check` runs
/// before the sockets are handed over). Any other failure (no such
/// address here, a port needing privileges) is an error.
pub fn check_bindable(site: &Site) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (key, addr) in addresses(site) {
        match bind_one(&addr) {
            Ok(_) => {}
            Err(nix::errno::Errno::EADDRINUSE) => warnings.push(
                site.problem_at(
                    &key,
                    format!(
                        "{addr} is in use: fine if it is this site's running server or its \
                     systemd socket; `serve` fails if another program holds it"
                    ),
                )
                .to_string(),
            ),
            Err(e) => return Err(cannot_listen(site, &key, &addr, e)),
        }
    }
    Ok(warnings)
}

/// A listen address that cannot be bound, named by its config key.
fn cannot_listen(site: &Site, key: &str, addr: &SocketAddr, e: nix::Error) -> anyhow::Error {
    anyhow!(
        "error: {}",
        site.problem_at(key, format!("cannot listen on {addr}: {e}"))
    )
}

fn bind_one(addr: &SocketAddr) -> nix::Result<OwnedFd> {
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        // As nginx: "[::]:80" means IPv6 only, so "0.0.0.0:80" can sit beside it.
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(*addr))?;
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

/// Passed sockets by the address each listens on. Anything else is closed
/// with a warning: corral only takes listening TCP sockets.
pub fn by_address(fds: Vec<OwnedFd>, from: &str) -> Vec<(SocketAddr, OwnedFd)> {
    fds.into_iter()
        .filter_map(|fd| match listening_address(fd.as_raw_fd()) {
            Some(addr) => Some((addr, fd)),
            None => {
                warn!("a socket from {from} is not a listening TCP socket; closing it");
                None
            }
        })
        .collect()
}

/// The address a listening TCP socket is bound to (made non-blocking, as
/// corral's own listeners are: systemd passes blocking ones by default).
fn listening_address(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: `fd` is open (owned by the caller) for this call's length.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if !getsockopt(&borrowed, sockopt::AcceptConn).ok()? {
        return None;
    }
    let addr: SockaddrStorage = getsockname(fd).ok()?;
    let addr = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
        (Some(v4), _) => SocketAddr::V4((*v4).into()),
        (None, Some(v6)) => SocketAddr::V6((*v6).into()),
        (None, None) => return None,
    };
    let flags = fcntl(borrowed, FcntlArg::F_GETFL).ok()?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(borrowed, FcntlArg::F_SETFL(flags)).ok()?;
    Some(addr)
}
