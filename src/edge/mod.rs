//! The edge: the one process that talks to clients. A pingora server with
//! one proxy service (`proxy::Edge`, the request path) and one background
//! service (`control::ControlListener`, worker membership from the master).
//!
//! Python never runs here. Shutdown: SIGTERM stops accepting, lets
//! in-flight requests finish (up to `app.graceful_timeout`) and exits as
//! soon as none is left; SIGINT/SIGQUIT exit at once.

mod access_log;
mod autoindex;
mod body;
mod compression;
mod conditional;
mod control;
mod dispatch;
mod drain;
mod forward;
pub(crate) mod http_ranges;
mod proxy;
mod rate_limit;
mod redirect;
mod respond;
mod static_files;
pub(crate) mod static_path;
pub(crate) mod strict;
mod tls;
mod upstream;

use crate::config::Site;
use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Fds;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Duration;
use tracing::{error, info};

/// What the master hands a new edge process.
pub struct Inherited {
    pub control_fd: RawFd,
    pub status_fd: RawFd,
    /// The listening sockets the master bound, keyed by address.
    pub listen_fds: Vec<(String, RawFd)>,
    /// Where pingora picks them up (see `adopt_listeners`).
    pub handoff: std::path::PathBuf,
}

/// Entry point in the forked child; returns only on a startup error.
pub fn run(site: &Site, inherited: Inherited) -> i32 {
    let Inherited {
        control_fd,
        status_fd,
        listen_fds,
        handoff,
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
    if let Err(e) = access_log::start(&site.access_log, site.config.log.access_format == "json") {
        return fail(format!("cannot open the access log: {e}"));
    }
    let mut conf = ServerConf {
        threads: site.config.server.edge_threads,
        // corral drains before telling pingora (see drain.rs); pingora then
        // has nothing left to wait for.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        daemon: false,
        ..ServerConf::default()
    };
    conf.upgrade_sock = handoff.display().to_string();
    let opt = Opt {
        upgrade: true,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let listener_fds: Vec<RawFd> = listen_fds.iter().map(|(_, fd)| *fd).collect();
    let sender = adopt_listeners(listen_fds, handoff);
    server.bootstrap();
    if sender.join().ok() != Some(true) {
        return fail("could not take over the listening sockets from the master".into());
    }

    let pool = dispatch::Pool::new(
        site.config.app.queue_size,
        site.queue_timeout(),
        site.threads(),
    );
    let edge = proxy::Edge {
        pool: pool.clone(),
        max_body: site.max_body(),
        timeout: site.timeout(),
        status_fd,
        static_mounts: site.static_mounts.clone(),
        compression: site.config.compression.clone(),
        limits: site.config.limits.clone(),
        rate: crate::config::units::parse_rate(&site.config.limits.rate)
            .ok()
            .map(|r| rate_limit::RateLimit::new(r, site.config.limits.burst)),
        trusted: site
            .config
            .server
            .trusted_proxies
            .iter()
            .filter_map(|p| crate::config::units::parse_cidr(p))
            .collect(),
    };
    let mut service = pingora_proxy::http_proxy_service(&server.configuration, edge);
    for addr in &site.listen {
        service.add_tcp(&addr.to_string());
    }
    if site.config.server.h2c {
        if let Some(proxy) = service.app_logic_mut() {
            let mut options = pingora_core::apps::HttpServerOptions::default();
            options.h2c = true;
            proxy.server_options = Some(options);
        }
    }
    if let Some(tls_site) = &site.tls {
        respond::set_tls_facts(respond::TlsFacts {
            hsts: tls_site.hsts.clone(),
            redirect_http: tls_site.redirect_http,
            https_port: tls_site.listen.first().map(|a| a.port()),
        });
        let prepared = match tls::Prepared::load(tls_site) {
            Ok(p) => p,
            Err(e) => return fail(format!("TLS: {e}")),
        };
        for addr in &tls_site.listen {
            match prepared.settings() {
                Ok(settings) => service.add_tls_with_settings(&addr.to_string(), None, settings),
                Err(e) => return fail(format!("TLS: {e}")),
            }
        }
    }
    server.add_service(service);
    server.add_service(background_service(
        "control",
        control::ControlListener {
            pool,
            fd: Mutex::new(Some(control_fd)),
            status_fd,
        },
    ));
    info!("edge {pid} listening on {:?}", site.listen);
    server.run(RunArgs {
        shutdown_signal: Box::new(EdgeSignals {
            listeners: listener_fds,
            limit: site.graceful_timeout(),
        }),
    });
    access_log::flush();
    0
}

/// pingora adopts already-bound listeners only through its zero-downtime
/// upgrade path: a Unix socket over which the old process sends its fds.
/// Here the "old process" is a thread of this one, sending the sockets the
/// master bound and this process inherited, while `bootstrap` receives them.
fn adopt_listeners(
    listen_fds: Vec<(String, RawFd)>,
    handoff: std::path::PathBuf,
) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let mut fds = Fds::new();
        for (addr, fd) in listen_fds {
            fds.add(addr, fd);
        }
        match fds.send_to_sock(handoff.to_string_lossy().as_ref()) {
            Ok(_) => true,
            Err(e) => {
                error!("cannot hand the listeners to pingora: {e}");
                false
            }
        }
    })
}

/// Maps signals to pingora's shutdown kinds; a graceful stop drains first
/// (see `drain`).
struct EdgeSignals {
    listeners: Vec<RawFd>,
    limit: Duration,
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
                drain::drain(&self.listeners, self.limit).await;
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
