//! The edge: the one process that talks to clients. A pingora server with
//! corral's accept service (`accept`: limits, PROXY protocol, TLS, strict
//! framing, then pingora's HTTP code running `request::Edge`, the request
//! path) and background services: `control::ControlListener` (worker
//! membership from the master), `status::socket` (`corral status` and
//! `corral dump`) and, when configured, the metrics listener.
//!
//! Python never runs here. Shutdown: SIGTERM stops accepting, lets
//! in-flight requests finish (up to `app.graceful_timeout`) and exits as
//! soon as none is left; SIGINT/SIGQUIT exit at once.

pub(crate) mod access_log;
pub(crate) mod acme;
pub(crate) mod admit;
pub mod app;
pub(crate) mod compression;
pub(crate) mod conn;
pub(crate) mod control;
pub(crate) mod files;
pub(crate) mod health;
pub(crate) mod inherited;
pub mod metrics;
pub(crate) mod proxy;
pub(crate) mod reply;
pub(crate) mod request;
pub(crate) mod route;
pub(crate) mod state;
pub mod status;

use crate::config::Site;
use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{error, info};

/// What the master hands a new edge process.
pub struct Inherited {
    pub control_fd: RawFd,
    pub status_fd: RawFd,
    /// The listening sockets the master bound, with their addresses.
    pub listen_fds: Vec<(SocketAddr, RawFd)>,
    /// The control socket, for `corral status` and `corral dump`.
    pub operator_fd: RawFd,
}

/// Entry point in the forked child; returns only on a startup error.
pub fn run(site: &Site, inherited: Inherited) -> i32 {
    let Inherited {
        control_fd,
        status_fd,
        listen_fds,
        operator_fd,
    } = inherited;
    let pid = std::process::id() as i32;
    let fail = |reason: String| {
        error!("edge: {reason}");
        crate::ipc::send_status(status_fd, &crate::ipc::Status::Failed(pid, reason));
        1
    };
    if let Err(e) = crate::master::privileges::drop_privileges(site) {
        return fail(format!("{e:#}"));
    }
    let log = match access_log::start(&site.access_log, site.config.log.access_format == "json") {
        Ok(log) => log,
        Err(e) => return fail(format!("cannot open the access log: {e}")),
    };
    // Not fatal: HTTP and the [[tls.cert]] hosts still serve.
    let acme = acme_served(site).unwrap_or_else(|e| {
        error!("acme: cannot use the state folder, no certificates will be ordered: {e}");
        None
    });
    let (handshaker, certificates) = match tls_setup(site, acme.as_ref()) {
        Ok(set) => set,
        Err(e) => return fail(format!("TLS: {e}")),
    };
    let state = state::EdgeState::new(tls_facts(site), log.clone());
    let conf = ServerConf {
        threads: site.config.server.edge_threads,
        // A single-threaded runtime per edge thread: a connection stays on
        // the thread that accepted it (`conn::accept`), as in nginx's
        // workers; no h2 lock or wake-up is shared between threads for it.
        work_stealing: false,
        // corral drains before telling pingora (see state.rs); pingora then
        // has nothing left to wait for.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        daemon: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let metrics = Arc::new(metrics::Metrics::new());
    let pool = app::pool::Pool::new(
        site.config.app.queue_size,
        site.queue_timeout(),
        metrics.clone(),
    );
    let edge = request_path(site, &state, &pool, status_fd, &metrics, acme.clone());
    let static_mounts = edge.static_mounts.clone();
    let mut proxy = pingora_proxy::http_proxy(&server.configuration, edge);
    let mut options = pingora_core::apps::HttpServerOptions::default();
    options.h2c = site.config.server.h2c;
    // CONNECT reaches `route`, which refuses a plain one (405) and takes
    // an extended one for a WebSocket (RFC 8441).
    options.allow_connect_method_proxying = true;
    // Idle keep-alive connections wait in `conn::accept`, not in pingora.
    options.return_idle_connections = true;
    proxy.server_options = Some(options);
    proxy.h2_options = Some(h2_options(&site.config.limits));
    let shared = accept_shared(site, &state, proxy, handshaker, &metrics, static_mounts);
    let inspector = Arc::new(status::Inspector {
        pool: pool.clone(),
        metrics: metrics.clone(),
        state: state.clone(),
        queue_size: site.config.app.queue_size,
        started: std::time::Instant::now(),
        certificates,
        acme: acme.clone(),
    });
    if let (Some(served), Some(acme_site)) = (acme, site.tls.as_ref().and_then(|t| t.acme.clone()))
    {
        server.add_service(background_service(
            "acme",
            acme::Manager {
                site: acme_site,
                served,
                state: state.clone(),
            },
        ));
    }
    server.add_service(background_service(
        "control socket",
        status::socket::ControlSocket {
            inspector: inspector.clone(),
            fd: Mutex::new(Some(operator_fd)),
        },
    ));
    // The metrics socket is served apart, never by the site's request path.
    let (metrics_fd, listen_fds): (Vec<_>, Vec<_>) = listen_fds
        .into_iter()
        .partition(|(addr, _)| site.metrics_listen == Some(*addr));
    server.add_service(conn::accept::AcceptService::new(
        listeners(site, listen_fds),
        shared,
        site.config.server.edge_threads,
    ));
    if let Some((_, fd)) = metrics_fd.into_iter().next() {
        let app = metrics::serve::MetricsApp {
            metrics: metrics.clone(),
            pool: pool.clone(),
            state: state.clone(),
            inspector,
        };
        server.add_service(background_service(
            "metrics",
            metrics::serve::MetricsListener {
                app: Arc::new(app),
                fd: Mutex::new(Some(fd)),
            },
        ));
    }
    server.add_service(background_service(
        "control",
        control::ControlListener {
            pool,
            state: state.clone(),
            metrics,
            fd: Mutex::new(Some(control_fd)),
            status_fd,
            log: log.clone(),
        },
    ));
    info!("edge {pid} listening on {:?}", site.listen);
    server.run(RunArgs {
        shutdown_signal: Box::new(EdgeSignals {
            limit: site.graceful_timeout(),
            state,
        }),
    });
    log.flush();
    0
}

/// `[tls.acme]`'s store, opened, with whatever certificate it holds
/// already installed: a restart serves HTTPS at once, without a new order.
fn acme_served(site: &Site) -> Result<Option<Arc<acme::served::Served>>, String> {
    let Some(cfg) = site.tls.as_ref().and_then(|t| t.acme.as_ref()) else {
        return Ok(None);
    };
    let first = cfg.hosts.first().ok_or("no hosts")?;
    let store = acme::store::Store::open(&cfg.state_dir, first)?;
    let http01 = cfg.challenge == crate::config::Challenge::Http01;
    let served = Arc::new(acme::served::Served::new(cfg.hosts.clone(), store, http01));
    if let Err(e) = served.reload() {
        tracing::warn!("acme: the stored certificate is unusable, ordering anew: {e}");
    }
    Ok(Some(served))
}

/// The TLS acceptor, and the certificate files' facts for `corral status`.
fn tls_setup(
    site: &Site,
    acme: Option<&Arc<acme::served::Served>>,
) -> Result<
    (
        Option<conn::tls::Handshaker>,
        Vec<crate::config::tls::CertFacts>,
    ),
    String,
> {
    let Some(tls) = site.tls.as_ref() else {
        return Ok((None, Vec::new()));
    };
    let prepared = conn::tls::Prepared::load(tls, acme.cloned())?;
    Ok((Some(prepared.acceptor()?), prepared.files))
}

fn tls_facts(site: &Site) -> Option<state::TlsFacts> {
    site.tls.as_ref().map(|t| state::TlsFacts {
        hsts: t.hsts.clone(),
        redirect_http: t.redirect_http,
        https_port: t.listen.first().map(|a| a.port()),
    })
}

/// What every request shares, from the config.
fn request_path(
    site: &Site,
    state: &Arc<state::EdgeState>,
    pool: &Arc<app::pool::Pool>,
    status_fd: RawFd,
    metrics: &Arc<metrics::Metrics>,
    acme: Option<Arc<acme::served::Served>>,
) -> request::Edge {
    let limits = &site.config.limits;
    request::Edge {
        state: state.clone(),
        pool: pool.clone(),
        routes: admit::routes::Routes::new(limits),
        timeout: site.timeout(),
        retry_idempotent: site.config.app.retry_idempotent,
        status_fd,
        static_mounts: site
            .static_mounts
            .iter()
            .cloned()
            .map(files::StaticMount::new)
            .collect(),
        compression: site.config.compression.clone(),
        buffers: app::response_buffer::Budget::new(
            limits.buffer_memory.0,
            limits.response_buffer.0,
            limits.max_temp_file.0,
        ),
        limits: limits.clone(),
        health_path: site.config.server.health_path.clone(),
        root_path: site.root_path().to_string(),
        metrics: metrics.clone(),
        trusted: site
            .config
            .server
            .trusted_proxies
            .iter()
            .filter_map(|p| crate::config::units::parse_cidr(p))
            .collect(),
        acme,
    }
}

fn listeners(site: &Site, listen_fds: Vec<(SocketAddr, RawFd)>) -> Vec<conn::accept::Listener> {
    listen_fds
        .into_iter()
        .map(|(addr, fd)| conn::accept::Listener {
            fd,
            addr,
            tls: site.tls.as_ref().is_some_and(|t| t.listen.contains(&addr)),
            proxy_protocol: site.proxy_protocol.contains(&addr),
        })
        .collect()
}

/// pingora's bounded defaults, plus SETTINGS_ENABLE_CONNECT_PROTOCOL so
/// browsers open WebSockets as streams of the page's own h2 connection
/// (RFC 8441) instead of a second connection, and `max_header_size` as the
/// header list limit (h2 answers 431 beyond it, as HTTP/1 does).
fn h2_options(
    limits: &crate::config::schema::Limits,
) -> pingora_core::protocols::http::v2::server::H2Options {
    let mut options = pingora_core::protocols::http::v2::server::default_h2_options();
    options.enable_connect_protocol();
    let max_list = u32::try_from(limits.max_header_size.0).unwrap_or(u32::MAX);
    options.max_header_list_size(max_list);
    options
}

/// What the accept loops share: limits, TLS and the HTTP code they hand
/// each connection to.
fn accept_shared(
    site: &Site,
    state: &Arc<state::EdgeState>,
    proxy: pingora_proxy::HttpProxy<request::Edge>,
    tls: Option<conn::tls::Handshaker>,
    metrics: &Arc<metrics::Metrics>,
    static_mounts: Arc<[files::StaticMount]>,
) -> conn::accept::Shared {
    let limits = &site.config.limits;
    conn::accept::Shared {
        state: state.clone(),
        app: Arc::new(proxy),
        tls,
        conns: conn::limits::ConnLimits::new(
            conn::limits::within_fd_limit(limits.max_connections),
            limits.max_connections_per_ip,
        ),
        header_timeout: limits.header_timeout.0,
        keepalive_timeout: limits.keepalive_timeout.0,
        head_limits: crate::proto::framing::HeadLimits {
            max_request_line: limits.max_request_line.0 as usize,
            max_head: limits.max_header_size.0 as usize,
            max_headers: limits.max_headers,
        },
        h2c: site.config.server.h2c,
        metrics: metrics.clone(),
        static_mounts,
    }
}

/// Maps signals to pingora's shutdown kinds; a graceful stop drains first
/// (see `drain`).
struct EdgeSignals {
    limit: Duration,
    state: Arc<state::EdgeState>,
}

#[async_trait]
impl ShutdownSignalWatch for EdgeSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            error!("edge cannot watch signals");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {
                self.state.drain(self.limit).await;
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
