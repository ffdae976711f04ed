//! The edge's accept loops: corral's own pingora service over the listening
//! sockets the master bound.
//!
//! pingora's listening service would do the accepting itself, but it offers
//! no place to stand between the socket and its HTTP parser. corral needs
//! one for: the connection limits (`conn_limits`), the PROXY protocol
//! header (`proxy_protocol`), a deadline on the TLS handshake plus the
//! request head, and the strict framing check (`guard`). Each accepted
//! connection goes through those, then to pingora's own HTTP code
//! (`HttpProxy`, running `request::Edge`) exactly as pingora would hand it.
//!
//! Stopping: `EdgeState::drain` (a reload or graceful stop) ends every loop,
//! which closes this process's copies of the listening sockets; the master
//! still holds them for the next edge.

use crate::edge::conn::guard::Guarded;
use crate::edge::conn::limits::ConnLimits;
use crate::edge::conn::shortcut::{self, Taken};
use crate::edge::conn::threads::EdgeThreads;
use crate::edge::conn::tls::Handshaker;
use crate::edge::metrics;
use crate::edge::request::Edge;
use crate::edge::state::EdgeState;
use crate::proto::framing::{Framer, HeadLimits};
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::SocketDigest;
use pingora_core::protocols::{GetSocketDigest, Peek, Ssl, Stream, UniqueID, ALPN};
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::listening::Service as ListeningService;
use pingora_core::services::Service;
use pingora_proxy::HttpProxy;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// One listening socket inherited from the master.
pub struct Listener {
    pub fd: RawFd,
    pub addr: SocketAddr,
    pub tls: bool,
    pub proxy_protocol: bool,
}

/// What every connection needs, shared by all accept loops.
pub struct Shared {
    /// Lifecycle (when to stop accepting) and the access log.
    pub state: Arc<EdgeState>,
    /// pingora's HTTP code running corral's request path.
    pub app: Arc<HttpProxy<Edge>>,
    pub tls: Option<Handshaker>,
    pub conns: Arc<ConnLimits>,
    pub header_timeout: Duration,
    /// How long an HTTP/1 connection may sit idle between requests.
    pub keepalive_timeout: Duration,
    pub head_limits: HeadLimits,
    pub h2c: bool,
    pub metrics: Arc<crate::edge::metrics::Metrics>,
    /// For the shortcut (`conn::shortcut`): the request path's mounts.
    pub static_mounts: Arc<[crate::edge::files::StaticMount]>,
}

pub struct AcceptService {
    listeners: Vec<Listener>,
    shared: Arc<Shared>,
    threads: usize,
}

impl AcceptService {
    pub fn new(listeners: Vec<Listener>, shared: Shared, threads: usize) -> Self {
        AcceptService {
            listeners,
            shared: Arc::new(shared),
            threads,
        }
    }
}

#[async_trait]
impl Service for AcceptService {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let shared = self.shared.clone();
        let threads = EdgeThreads::find(self.threads).await;
        let mut loops = Vec::new();
        for l in self.listeners.drain(..) {
            // SAFETY: the master gave this process its own copy of the fd,
            // used only here from now on.
            let std = unsafe { std::net::TcpListener::from_raw_fd(l.fd) };
            if let Err(e) = std.set_nonblocking(true) {
                error!("cannot listen on {}: {e}", l.addr);
                continue;
            }
            // One accept loop per thread, each on its own copy of the
            // socket; a connection then lives on the thread `threads`
            // places it on.
            for (here, handle) in threads.handles() {
                let copy = match std.try_clone() {
                    Ok(copy) => copy,
                    Err(e) => {
                        error!("cannot listen on {}: {e}", l.addr);
                        continue;
                    }
                };
                let (shared, shutdown) = (shared.clone(), shutdown.clone());
                let on = Accepting {
                    here,
                    threads: threads.clone(),
                    tls: l.tls,
                    proxy_protocol: l.proxy_protocol,
                };
                let addr = l.addr;
                loops.push(handle.spawn(async move {
                    match TcpListener::from_std(copy) {
                        Ok(listener) => accept_loop(listener, on, shared, shutdown).await,
                        Err(e) => error!("cannot listen on {addr}: {e}"),
                    }
                }));
            }
        }
        for l in loops {
            let _ = l.await;
        }
        // Accepting stops when draining starts, but pingora's cleanup drops
        // connections still waiting for a request head: only once the
        // drain is over and pingora itself shuts down.
        let mut shutdown = shutdown;
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        shared.app.cleanup().await;
    }

    fn name(&self) -> &str {
        "corral edge"
    }

    fn threads(&self) -> Option<usize> {
        Some(self.threads)
    }
}

/// What an accept loop knows of where it runs and what it accepts.
struct Accepting {
    /// Its thread's index in `threads`.
    here: usize,
    threads: Arc<EdgeThreads>,
    tls: bool,
    proxy_protocol: bool,
}

async fn accept_loop(
    listener: TcpListener,
    on: Accepting,
    shared: Arc<Shared>,
    shutdown: ShutdownWatch,
) {
    let mut stop = shared.state.stopped();
    let mut shutdown_rx = shutdown.clone();
    let stopping =
        |stop: &watch::Receiver<bool>, sd: &ShutdownWatch| *stop.borrow() || *sd.borrow();
    loop {
        if stopping(&stop, &shutdown_rx) {
            break;
        }
        // A place first: past max_connections, connections wait in the
        // kernel's backlog rather than being accepted and dropped.
        let permit = tokio::select! {
            p = shared.conns.place() => p,
            _ = stop.changed() => continue,
            r = shutdown_rx.changed() => if r.is_err() { break } else { continue },
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => continue,
            r = shutdown_rx.changed() => if r.is_err() { break } else { continue },
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!("accept failed: {e}");
                if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE)
                {
                    // Out of file descriptors: wait for some to close rather
                    // than spin on an accept that keeps failing.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                continue;
            }
        };
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        let (tls, proxy_protocol) = (on.tls, on.proxy_protocol);
        on.threads.place(on.here).serve(tcp, move |tcp| {
            serve(tcp, peer, permit, tls, proxy_protocol, shared, shutdown)
        });
    }
    info!(
        "stopped accepting on {}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
}

/// One connection, from accept to pingora.
async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    tls: bool,
    proxy_protocol: bool,
    shared: Arc<Shared>,
    shutdown: ShutdownWatch,
) {
    // Boxed, as are the h2 future and a WebSocket's tunnel below: a task is
    // as large as its future's largest state, for its whole life. Inline,
    // the set-up's locals and pingora's h2 future made every connection's
    // task 7 KiB, an idle keep-alive client or WebSocket included; this
    // way an HTTP/1 connection's task is under 1 KiB.
    let set_up = Box::pin(open(tcp, peer, permit, tls, proxy_protocol, &shared)).await;
    let Some(Opened {
        guarded,
        is_h2,
        counted: _counted,
    }) = set_up
    else {
        return;
    };
    if is_h2 {
        // One call serves the whole connection, idle times included.
        Box::pin(ListeningService::<HttpProxy<Edge>>::handle_event(
            guarded,
            shared.app.clone(),
            shutdown,
        ))
        .await;
        return;
    }
    serve_http1(guarded, shared, shutdown).await;
}

/// A connection past its set-up, ready for pingora.
struct Opened {
    /// The guarded stream (`guard`), over TLS when the listener has it.
    guarded: Box<Guarded>,
    is_h2: bool,
    /// The connection gauges (by protocol, and TLS), until it closes.
    counted: (metrics::Open, Option<metrics::Open>),
}

/// PROXY header, admission, TLS handshake, guard: None when the
/// connection ends there.
async fn open(
    mut tcp: TcpStream,
    peer: SocketAddr,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    tls: bool,
    proxy_protocol: bool,
    shared: &Shared,
) -> Option<Opened> {
    let accepted = Instant::now();
    // The handshake and the first head share one deadline (nginx's
    // client_header_timeout covers its SSL handshake too).
    let deadline = accepted + shared.header_timeout;
    let mut client = peer;
    if proxy_protocol {
        let read = crate::edge::conn::proxy_protocol::read_header(&mut tcp);
        if let Some(named) = in_time(deadline, peer, "PROXY header", read).await? {
            client = named;
        }
    }
    let (ticket, over_limit) = match shared.conns.admit(permit, client.ip()) {
        Ok(t) => (t, false),
        Err(t) => (t, true),
    };
    let mut l4 = L4Stream::from(tcp);
    if let Err(e) = l4.set_nodelay() {
        debug!("{peer}: {e}");
    }
    let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(client)));
    l4.set_socket_digest(digest);
    let stream: Stream = match (&shared.tls, tls) {
        (Some(handshaker), true) => {
            // Boxed: the handshake's state is 7 KiB, twice over once moved
            // into the timeout.
            let handshake = Box::pin(handshaker.handshake(l4));
            Box::new(in_time(deadline, client, "TLS handshake", handshake).await?)
        }
        _ => Box::new(l4),
    };
    let alpn = stream.selected_alpn_proto();
    if let Some(ALPN::Custom(proto)) = &alpn {
        // A CA's TLS-ALPN-01 check: the handshake was the answer (RFC
        // 8737 §3); it sends no request.
        if proto.protocol() == crate::edge::conn::tls::ACME_TLS_ALPN {
            debug!("{client}: acme-tls/1 check answered");
            return None;
        }
    }
    let is_h2 = matches!(alpn, Some(ALPN::H2));
    if let Some(tls) = stream.get_ssl_digest() {
        shared.metrics.handshake(&tls.version);
    }
    let counted = (
        shared.metrics.open(if is_h2 { "h2" } else { "http1" }),
        tls.then(|| shared.metrics.open("tls")),
    );
    let framer = if is_h2 {
        Framer::opaque()
    } else {
        Framer::new(shared.head_limits, shared.h2c && !tls)
    };
    let mut guarded = Guarded::new(
        stream,
        framer,
        shared.header_timeout,
        accepted,
        client.ip().to_string(),
        ticket,
        shared.state.log.clone(),
    );
    if over_limit {
        if is_h2 {
            // No HTTP/1 answer fits an HTTP/2 connection: just close it.
            return None;
        }
        guarded.refuse_now(503, "too many connections from this address");
    }
    Some(Opened {
        guarded: Box::new(guarded),
        is_h2,
        counted,
    })
}

/// An HTTP/1 connection, request after request. Between requests it waits
/// here, in a small future, for the next request's first bytes: pingora's
/// request future is as large as its largest state (tens of KiB), and
/// thousands of idle keep-alive clients would each hold one. The first
/// request's wait is bounded by the guard's header deadline, later ones by
/// `keepalive_timeout`. A draining edge still serves a request that comes
/// on an idle connection (pingora answers it with `Connection: close`):
/// closing idle connections at the drain would reset a request already on
/// its way. A request that repeats a cached static answer is answered by
/// the shortcut (`conn::shortcut`); the others go to pingora.
async fn serve_http1(mut guarded: Box<Guarded>, shared: Arc<Shared>, shutdown: ShutdownWatch) {
    let tls = guarded.get_ssl_digest().is_some();
    let mut first = true;
    loop {
        // For the first request the guard's header deadline (from the
        // accept) applies; this is only a backstop behind it.
        let idle_limit = if first && !shared.header_timeout.is_zero() {
            shared.header_timeout * 2
        } else {
            shared.keepalive_timeout
        };
        let next = tokio::time::timeout(idle_limit, guarded.try_peek(&mut [])).await;
        if !matches!(next, Ok(Ok(true))) {
            return; // closed, failed, or idle too long
        }
        first = false;
        if let Some(repeat) = shortcut::find(guarded.checked(), &shared, tls) {
            match Box::pin(shortcut::answer(&mut guarded, &shared, tls, repeat)).await {
                Taken::Answered => continue,
                Taken::Closed => return,
                Taken::No => {}
            }
        }
        let id = guarded.id();
        let reused = match shared.app.process_new(guarded, &shutdown).await {
            Some(reused) => reused,
            None => {
                // An upgraded connection goes on as a WebSocket tunnel here
                // (boxed: only tunnels should pay for the tunnel's state).
                if let Some(tunnel) = handed_over_tunnel(&shared, id) {
                    tunnel.await;
                }
                return;
            }
        };
        // pingora gives back the stream it was given.
        match reused.into_any().downcast::<Guarded>() {
            Ok(again) => guarded = again,
            Err(_) => return,
        }
    }
}

/// The WebSocket tunnel an upgraded connection was handed over to, boxed
/// here: built inline in `serve_http1`, the tunnel's state (and the
/// handed-over parts it is made from) sized every HTTP/1 connection's task,
/// 2.8 KiB instead of 1 KiB, idle keep-alive clients included.
fn handed_over_tunnel(
    shared: &Shared,
    id: i32,
) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
    let tunnel = shared.state.handovers.take(id)?;
    Some(Box::pin(tunnel.run()))
}

/// Runs one step of a connection's set-up within its deadline; a failure
/// is only worth a debug line (scanners, health checks, impatient clients).
async fn in_time<T, E: std::fmt::Display>(
    deadline: Instant,
    client: SocketAddr,
    what: &str,
    step: impl std::future::Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout_at(deadline.into(), step).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            debug!("{client}: {what} failed: {e}");
            None
        }
        Err(_) => {
            debug!("{client}: {what} took too long");
            None
        }
    }
}
