//! The master binds the site's listening sockets once, before forking, and
//! keeps them for its whole life. Each edge process gets them by
//! inheritance, so an edge that crashes and is respawned never closes the
//! port: connections wait in the kernel's backlog meanwhile instead of being
//! refused. (It also means privileged ports work with `[server] user`.)

use crate::config::Site;
use anyhow::bail;
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// nginx's default backlog on Linux is 511; a little deeper absorbs edge restarts.
const BACKLOG: i32 = 1024;

pub struct Listeners {
    socks: Vec<(SocketAddr, OwnedFd)>,
}

impl Listeners {
    pub fn bind_all(site: &Site) -> anyhow::Result<Self> {
        let mut socks = Vec::new();
        let plain = site
            .listen
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("server.listen[{i}]"), a));
        let tls = site.tls.iter().flat_map(|t| {
            t.listen
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("tls.listen[{i}]"), a))
        });
        for (key, addr) in plain.chain(tls) {
            match bind_one(addr) {
                Ok(fd) => socks.push((*addr, fd)),
                Err(e) => bail!(
                    "error: {}",
                    site.problem_at(&key, format!("cannot listen on {addr}: {e}"))
                ),
            }
        }
        Ok(Listeners { socks })
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
