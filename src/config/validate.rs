//! Checks that need more than types: addresses parse, folders exist, the
//! virtualenv matches our Python, names are well-formed. Every failure
//! becomes a [`Problem`] pointing at its key.

use super::diagnostics::{Problem, Source};
use super::schema::Config;
use super::{AccessLog, AppSpec, Site};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Python minor version corral was built against (from build.rs).
pub const PYTHON_VERSION: &str = env!("CORRAL_PYTHON_VERSION");

/// Collects problems and warnings, each pointing at its key, and resolves
/// paths against the config file's folder.
pub(super) struct Checker<'a> {
    source: &'a Source<'a>,
    base: PathBuf,
    problems: &'a mut Vec<Problem>,
    warnings: &'a mut Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn bad(&mut self, key: &str, msg: String) {
        self.problems.push(self.source.at_key(key, msg));
    }

    pub(super) fn warn(&mut self, key: &str, msg: String) {
        self.warnings.push(self.source.at_key(key, msg));
    }

    pub(super) fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p == Path::new(".") {
            self.base.clone()
        } else if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

/// Checks every table in the order of site.toml, so problems are listed
/// in the order a reader meets the keys.
pub fn validate(
    source: &Source,
    config: Config,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<Site> {
    let base = source
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let ck = &mut Checker {
        source,
        base,
        problems,
        warnings,
    };
    let listen = server_listen(ck, &config);
    let code = app_code(ck, &config);
    app_pool(ck, &config);
    websocket(ck, &config);
    process(ck, &config);
    app_env(ck, &config);
    let static_mounts = static_mounts(ck, &config);
    let tls = validate_tls(ck, &config.tls, &listen);
    limits(ck, &config);
    let all_listeners: Vec<SocketAddr> = listen
        .iter()
        .chain(tls.iter().flat_map(|t| t.listen.iter()))
        .copied()
        .collect();
    let proxy_protocol = proxy_protocol(ck, &config, &all_listeners);
    let metrics_listen = metrics(ck, &config, &all_listeners);
    limit_routes(ck, &config);
    let access_log = log(ck, &config);
    let pid_file =
        (!config.server.pid_file.is_empty()).then(|| ck.resolve(&config.server.pid_file));
    let control_socket = (!config.server.control_socket.is_empty())
        .then(|| ck.resolve(&config.server.control_socket));
    let (app, chdir, pythonpath, virtualenv) = code;
    Some(Site {
        file: source.file.to_path_buf(),
        pid_file,
        control_socket,
        static_mounts,
        tls,
        warnings: Vec::new(),
        listen,
        proxy_protocol,
        metrics_listen,
        app: app.ok()?,
        chdir,
        pythonpath,
        virtualenv,
        access_log,
        config,
    })
}

/// `[server] listen` and the edge's threads.
fn server_listen(ck: &mut Checker, config: &Config) -> Vec<SocketAddr> {
    let mut listen = Vec::new();
    if config.server.listen.is_empty() {
        ck.bad(
            "server.listen",
            "needs at least one address, e.g. [\"127.0.0.1:8080\"]".into(),
        );
    }
    for (i, addr) in config.server.listen.iter().enumerate() {
        match addr.parse::<SocketAddr>() {
            Ok(a) if listen.contains(&a) => {
                ck.bad(&format!("server.listen[{i}]"), format!("`{addr}` is listed twice"))
            }
            Ok(a) => listen.push(a),
            Err(_) => ck.bad(
                &format!("server.listen[{i}]"),
                format!("`{addr}` is not an address: use IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
            ),
        }
    }
    if config.server.edge_threads == 0 || config.server.edge_threads > 256 {
        ck.bad("server.edge_threads", "must be between 1 and 256".into());
    }
    health(ck, config);
    listen
}

/// `[metrics] listen`: an address of its own, never a site listener.
fn metrics(ck: &mut Checker, config: &Config, site: &[SocketAddr]) -> Option<SocketAddr> {
    let listen = &config.metrics.listen;
    if listen.is_empty() {
        return None;
    }
    match listen.parse::<SocketAddr>() {
        Ok(a) if site.contains(&a) => {
            ck.bad(
                "metrics.listen",
                format!("`{listen}` is also a site listener: give metrics an address of their own"),
            );
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            ck.bad(
                "metrics.listen",
                format!("`{listen}` is not an address: use IP:PORT, e.g. \"127.0.0.1:9191\""),
            );
            None
        }
    }
}

/// The health path is matched exactly, before static files and the app.
fn health(ck: &mut Checker, config: &Config) {
    let path = &config.server.health_path;
    if !path.is_empty()
        && (!path.starts_with('/')
            || path.contains(['?', '#'])
            || path.contains(char::is_whitespace))
    {
        ck.bad(
            "server.health_path",
            format!("`{path}` is not a path: use one such as \"/healthz\" (or \"\" for none)"),
        );
    }
    if config.server.drain_delay.0 > Duration::from_secs(3600) {
        ck.bad("server.drain_delay", "must be at most 1h".into());
    }
}

type AppCode = (
    Result<AppSpec, String>,
    PathBuf,
    Vec<PathBuf>,
    Option<PathBuf>,
);

/// `[app]`: what to import, and from where.
fn app_code(ck: &mut Checker, config: &Config) -> AppCode {
    let app = parse_app_spec(&config.app.module);
    if let Err(msg) = &app {
        ck.bad("app.module", msg.clone());
    }
    let chdir = ck.resolve(&config.app.chdir);
    if !chdir.is_dir() {
        ck.bad(
            "app.chdir",
            format!("folder {} does not exist", chdir.display()),
        );
    }
    let pythonpath: Vec<PathBuf> = config
        .app
        .pythonpath
        .iter()
        .map(|p| ck.resolve(p))
        .collect();
    for (i, p) in pythonpath.iter().enumerate() {
        if !p.exists() {
            ck.bad(
                &format!("app.pythonpath[{i}]"),
                format!("{} does not exist", p.display()),
            );
        }
    }
    let virtualenv = if config.app.virtualenv.is_empty() {
        None
    } else {
        let venv = ck.resolve(&config.app.virtualenv);
        if let Err(msg) = check_virtualenv(&venv) {
            ck.bad("app.virtualenv", msg);
        }
        Some(venv)
    };
    (app, chdir, pythonpath, virtualenv)
}

/// `[websocket]`: a message limit that can hold a message.
fn websocket(ck: &mut Checker, config: &Config) {
    let ws = &config.websocket;
    if ws.max_message.0 < 125 || ws.max_message.0 > 1 << 30 {
        ck.bad(
            "websocket.max_message",
            "must be between 125 bytes and 1GiB".into(),
        );
    }
    let (ping, idle) = (ws.ping_interval.0, ws.idle_timeout.0);
    if !idle.is_zero() && !ping.is_zero() && idle <= ping {
        ck.bad(
            "websocket.idle_timeout",
            format!("must be longer than websocket.ping_interval ({ping:?}), or a live client is cut off"),
        );
    }
}

/// `[app]`: the pool's size and recycling.
fn app_pool(ck: &mut Checker, config: &Config) {
    if let crate::config::units::WorkerCount::Fixed(0 | 1025..) = config.app.workers {
        ck.bad(
            "app.workers",
            "must be between 1 and 1024, or \"auto\"".into(),
        );
    }
    if config.app.threads == 0 || config.app.threads > 1024 {
        ck.bad("app.threads", "must be between 1 and 1024".into());
    }
    if config.app.concurrency == 0 || config.app.concurrency > 100_000 {
        ck.bad("app.concurrency", "must be between 1 and 100000".into());
    }
    if config.app.interface == super::schema::Interface::Asgi && config.app.threads > 1 {
        ck.bad(
            "app.threads",
            "applies to WSGI apps; an ASGI worker runs one event loop (see app.concurrency)".into(),
        );
    }
    if config.app.max_requests_jitter > 0 && config.app.max_requests == 0 {
        ck.bad("app.max_requests_jitter", "needs app.max_requests".into());
    }
    if let Err(why) = check_root_path(&config.app.root_path) {
        ck.bad("app.root_path", why.into());
    }
}

/// `[app] root_path`: "" or a path such as "/blog", compared as the client
/// sends it, so only characters that need no percent-encoding.
fn check_root_path(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Ok(());
    }
    if !p.starts_with('/') || p.ends_with('/') {
        return Err("must start with \"/\" and not end with one, as \"/blog\" (or be \"\" for the site's root)");
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "/-._~".contains(c);
    if !p.chars().all(plain) || p.contains("//") || p.split('/').any(|s| s == "." || s == "..") {
        return Err("may hold only letters, digits, \"-._~\" and single \"/\" between segments");
    }
    Ok(())
}

/// `[server]`: the user and group to run as, the pid file.
fn process(ck: &mut Checker, config: &Config) {
    if !config.server.group.is_empty() && config.server.user.is_empty() {
        ck.bad("server.group", "needs server.user".into());
    }
    if !config.server.user.is_empty() {
        match nix::unistd::User::from_name(&config.server.user) {
            Ok(Some(_)) => {}
            _ => ck.bad(
                "server.user",
                format!("no user named `{}`", config.server.user),
            ),
        }
    }
    if !config.server.group.is_empty() {
        match nix::unistd::Group::from_name(&config.server.group) {
            Ok(Some(_)) => {}
            _ => ck.bad(
                "server.group",
                format!("no group named `{}`", config.server.group),
            ),
        }
    }
    for (key, value) in [
        ("server.pid_file", &config.server.pid_file),
        ("server.control_socket", &config.server.control_socket),
    ] {
        if value.is_empty() {
            continue;
        }
        let p = ck.resolve(value);
        if !p.parent().is_some_and(Path::is_dir) {
            ck.bad(key, format!("folder of {} does not exist", p.display()));
        }
    }
}

/// `[app]`: the queue and the environment.
fn app_env(ck: &mut Checker, config: &Config) {
    if config.app.queue_timeout.0.is_zero() {
        ck.bad("app.queue_timeout", "must be more than zero".into());
    }
    for key in config.app.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            ck.bad(
                "app.env",
                format!("`{key}` is not a valid environment variable name"),
            );
        }
    }
}

/// `[[static]]` mounts, longest URL first.
fn static_mounts(ck: &mut Checker, config: &Config) -> Vec<super::Mount> {
    let mut static_mounts = Vec::new();
    for (i, m) in config.static_mounts.iter().enumerate() {
        let key = |k: &str| format!("static[{i}].{k}");
        if !m.url.starts_with('/') || !m.url.ends_with('/') {
            ck.bad(
                &key("url"),
                format!(
                    "`{}` must start and end with \"/\", e.g. \"/static/\"",
                    m.url
                ),
            );
        }
        if m.dir.is_empty() {
            ck.bad(&key("dir"), "is required: the folder to serve".into());
            continue;
        }
        let dir = ck.resolve(&m.dir);
        match dir.canonicalize() {
            Ok(d) if d.is_dir() => static_mounts.push(super::Mount {
                url: m.url.clone(),
                dir: d,
                settings: m.clone(),
            }),
            _ => ck.bad(
                &key("dir"),
                format!("folder {} does not exist", dir.display()),
            ),
        }
        if !matches!(m.fallback.as_str(), "" | "app") {
            ck.bad(
                &key("fallback"),
                "must be \"app\" (or left out for 404)".into(),
            );
        }
        for (j, name) in m.index.iter().enumerate() {
            if name.is_empty() || name.contains('/') {
                ck.bad(
                    &format!("static[{i}].index[{j}]"),
                    format!("`{name}` must be a plain file name"),
                );
            }
        }
        if config.static_mounts[..i].iter().any(|o| o.url == m.url) {
            ck.bad(&key("url"), format!("`{}` is mounted twice", m.url));
        }
    }
    static_mounts.sort_by_key(|m| std::cmp::Reverse(m.url.len()));
    static_mounts
}

/// `[compression]` and `[limits]` on the head and rate; `[server]
/// trusted_proxies`.
fn limits(ck: &mut Checker, config: &Config) {
    // [compression]
    if !(1..=9).contains(&config.compression.level) {
        ck.bad("compression.level", "must be between 1 and 9".into());
    }

    // [limits]
    if config.limits.max_request_line.0 < 64 {
        ck.bad(
            "limits.max_request_line",
            "must be at least 64 bytes".into(),
        );
    }
    if config.limits.max_header_size.0 < 256 || config.limits.max_header_size.0 > 1 << 20 {
        // pingora's parser stops at 1 MiB whatever we say.
        ck.bad(
            "limits.max_header_size",
            "must be between 256 bytes and 1MiB".into(),
        );
    }
    if config.limits.max_headers == 0 || config.limits.max_headers > 250 {
        ck.bad("limits.max_headers", "must be between 1 and 250".into());
    }
    if !config.limits.rate.is_empty() {
        if let Err(e) = super::units::parse_rate(&config.limits.rate) {
            ck.bad("limits.rate", e);
        }
    } else if config.limits.burst > 0 {
        ck.bad("limits.burst", "needs limits.rate".into());
    }
    for (i, p) in config.server.trusted_proxies.iter().enumerate() {
        if super::units::parse_cidr(p).is_none() {
            ck.bad(
                &format!("server.trusted_proxies[{i}]"),
                format!("`{p}` is not an IP address or CIDR block (e.g. \"10.0.0.0/8\")"),
            );
        }
    }
}

/// `[server] proxy_protocol`: each must be one of the listeners.
fn proxy_protocol(ck: &mut Checker, config: &Config, listeners: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut proxy_protocol = Vec::new();
    for (i, addr) in config.server.proxy_protocol.iter().enumerate() {
        match addr.parse::<SocketAddr>() {
            Ok(a) if listeners.contains(&a) => proxy_protocol.push(a),
            Ok(_) => ck.bad(
                &format!("server.proxy_protocol[{i}]"),
                format!("`{addr}` is not one of server.listen or tls.listen"),
            ),
            Err(_) => ck.bad(
                &format!("server.proxy_protocol[{i}]"),
                format!("`{addr}` is not an address: use IP:PORT as in server.listen"),
            ),
        }
    }
    proxy_protocol
}

/// `[[limits.route]]`, then the site-wide timeouts and body limit.
fn limit_routes(ck: &mut Checker, config: &Config) {
    for (i, r) in config.limits.route.iter().enumerate() {
        let key = |k: &str| format!("limits.route[{i}].{k}");
        if !r.path.starts_with('/') {
            ck.bad(&key("path"), format!("`{}` must start with /", r.path));
        } else if config.limits.route[..i].iter().any(|o| o.path == r.path) {
            ck.bad(&key("path"), format!("`{}` is listed twice", r.path));
        }
        if r.max_body.is_some_and(|b| b.0 == 0) {
            ck.bad(&key("max_body"), "must be more than zero".into());
        }
        match &r.rate {
            Some(rate) if rate.is_empty() => {}
            Some(rate) => {
                if let Err(e) = super::units::parse_rate(rate) {
                    ck.bad(&key("rate"), e);
                }
            }
            None if r.burst.is_some() => {
                ck.bad(&key("burst"), "needs a rate on the same route".into())
            }
            None => {}
        }
    }
    if config.limits.header_timeout.0 > Duration::from_secs(3600) {
        ck.bad("limits.header_timeout", "must be at most 1h".into());
    }
    if config.limits.max_body.0 == 0 {
        ck.bad("limits.max_body", "must be more than zero".into());
    }
}

/// `[log]`.
fn log(ck: &mut Checker, config: &Config) -> AccessLog {
    let access_log = match config.log.access.as_str() {
        "off" => AccessLog::Off,
        "stdout" | "-" => AccessLog::Stdout,
        path => {
            let p = ck.resolve(path);
            match p.parent() {
                Some(dir) if dir.is_dir() => {}
                _ => ck.bad(
                    "log.access",
                    format!("folder of {} does not exist", p.display()),
                ),
            }
            AccessLog::File(p)
        }
    };
    if !matches!(config.log.access_format.as_str(), "combined" | "json") {
        ck.bad(
            "log.access_format",
            "must be \"combined\" or \"json\"".into(),
        );
    }
    if !matches!(
        config.log.level.as_str(),
        "error" | "warn" | "info" | "debug" | "trace"
    ) {
        ck.bad(
            "log.level",
            "must be one of error, warn, info, debug, trace".into(),
        );
    }
    access_log
}

fn validate_tls(
    ck: &mut Checker,
    cfg: &super::schema::Tls,
    plain: &[SocketAddr],
) -> Option<super::TlsSite> {
    if cfg.listen.is_empty() && cfg.cert.is_empty() && cfg.acme.is_none() {
        if cfg.redirect_http {
            ck.bad(
                "tls.redirect_http",
                "needs [tls] listen and a [[tls.cert]] or [tls.acme]".into(),
            );
        }
        return None;
    }
    let mut listen = Vec::new();
    for (i, addr) in cfg.listen.iter().enumerate() {
        match addr.parse::<SocketAddr>() {
            Ok(a) if plain.contains(&a) || listen.contains(&a) => ck.bad(
                &format!("tls.listen[{i}]"),
                format!("`{addr}` is already a listener"),
            ),
            Ok(a) => listen.push(a),
            Err(_) => ck.bad(
                &format!("tls.listen[{i}]"),
                format!("`{addr}` is not an address: use IP:PORT, e.g. \"0.0.0.0:443\""),
            ),
        }
    }
    if cfg.listen.is_empty() {
        ck.bad(
            "tls.listen",
            "needs at least one address, e.g. [\"0.0.0.0:443\"]".into(),
        );
    }
    if cfg.cert.is_empty() && cfg.acme.is_none() {
        ck.bad(
            "tls",
            "needs at least one [[tls.cert]] with cert and key, or [tls.acme]".into(),
        );
    }
    let certs = tls_certs(ck, cfg);
    let acme = cfg
        .acme
        .as_ref()
        .and_then(|a| super::acme::validate(ck, a, plain, &listen));
    let client_ca = if cfg.client_ca.is_empty() {
        if !cfg.client_auth.is_empty() {
            ck.bad("tls.client_auth", "needs tls.client_ca".into());
        }
        None
    } else {
        let ca = ck.resolve(&cfg.client_ca);
        if let Err(e) = super::tls::read_chain(&ca) {
            ck.bad("tls.client_ca", e);
        }
        Some(ca)
    };
    let client_required = match cfg.client_auth.as_str() {
        "" | "required" => true,
        "optional" => false,
        _ => {
            ck.bad(
                "tls.client_auth",
                "must be \"required\" or \"optional\"".into(),
            );
            true
        }
    };
    let alpn_check = acme
        .as_ref()
        .is_some_and(|a| a.challenge == super::Challenge::TlsAlpn01);
    if alpn_check && client_ca.is_some() && client_required {
        ck.bad(
            "tls.acme.challenge",
            "tls-alpn-01 cannot pass tls.client_auth = \"required\" (the CA has no client \
             certificate): set challenge = \"http-01\" or client_auth = \"optional\""
                .into(),
        );
    }
    if !cfg.hsts.is_empty() && !cfg.hsts.to_ascii_lowercase().contains("max-age=") {
        ck.bad(
            "tls.hsts",
            "must contain max-age, e.g. \"max-age=63072000; includeSubDomains\"".into(),
        );
    }
    Some(super::TlsSite {
        listen,
        certs,
        client_ca,
        client_required,
        hsts: cfg.hsts.clone(),
        redirect_http: cfg.redirect_http,
        acme,
    })
}

/// `[[tls.cert]]`: each pair loads, and its host names are known.
fn tls_certs(ck: &mut Checker, cfg: &super::schema::Tls) -> Vec<super::TlsCertFiles> {
    let mut certs = Vec::new();
    for (i, c) in cfg.cert.iter().enumerate() {
        if c.cert.is_empty() || c.key.is_empty() {
            ck.bad(
                &format!("tls.cert[{i}]"),
                "needs both `cert` and `key`".into(),
            );
            continue;
        }
        let (cert, key) = (ck.resolve(&c.cert), ck.resolve(&c.key));
        match super::tls::load(&cert, &key, &c.hosts) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    ck.warn(&format!("tls.cert[{i}].cert"), w.clone());
                }
                certs.push(super::TlsCertFiles {
                    cert,
                    key,
                    hosts: if c.hosts.is_empty() {
                        loaded.names
                    } else {
                        c.hosts.clone()
                    },
                });
            }
            Err(e) => ck.bad(&format!("tls.cert[{i}]"), e),
        }
    }
    certs
}

/// `pkg.module:callable` or `pkg.module:factory()`.
pub fn parse_app_spec(s: &str) -> Result<AppSpec, String> {
    if s.is_empty() {
        return Err(
            "is required: the WSGI app as \"module:callable\", e.g. \"myproject.wsgi:application\""
                .into(),
        );
    }
    let Some((module, callable)) = s.split_once(':') else {
        return Err(format!(
            "`{s}` must be \"module:callable\", e.g. \"app:application\""
        ));
    };
    let (callable, factory) = match callable.strip_suffix("()") {
        Some(c) => (c, true),
        None => (callable, false),
    };
    let ident = |x: &str| {
        !x.is_empty()
            && !x.starts_with(|c: char| c.is_ascii_digit())
            && x.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    if !module.split('.').all(ident) {
        return Err(format!("`{module}` is not a Python module name"));
    }
    if !callable.split('.').all(ident) {
        return Err(format!("`{callable}` is not a Python attribute name"));
    }
    Ok(AppSpec {
        module: module.into(),
        callable: callable.into(),
        factory,
    })
}

fn check_virtualenv(venv: &Path) -> Result<(), String> {
    let cfg = venv.join("pyvenv.cfg");
    let text = std::fs::read_to_string(&cfg).map_err(|_| {
        format!(
            "{} is not a virtualenv (no pyvenv.cfg); make one with `python{PYTHON_VERSION} -m venv {}`",
            venv.display(),
            venv.display()
        )
    })?;
    let version = text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        matches!(k.trim(), "version" | "version_info").then(|| v.trim().to_string())
    });
    match version {
        Some(v) if v == PYTHON_VERSION || v.starts_with(&format!("{PYTHON_VERSION}.")) => Ok(()),
        Some(v) => Err(format!(
            "{} was made with Python {v}, but corral embeds Python {PYTHON_VERSION}; recreate it with python{PYTHON_VERSION}",
            venv.display()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_paths() {
        for ok in ["", "/blog", "/a/b-c_d.e~f"] {
            assert_eq!(check_root_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "blog",
            "/blog/",
            "/",
            "/a//b",
            "/a/../b",
            "/caf%C3%A9",
            "/a b",
            "/a?b",
        ] {
            assert!(check_root_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_specs() {
        let s = parse_app_spec("pkg.wsgi:application").unwrap();
        assert_eq!(
            (s.module.as_str(), s.callable.as_str(), s.factory),
            ("pkg.wsgi", "application", false)
        );
        assert!(parse_app_spec("app:create_app()").unwrap().factory);
        assert!(parse_app_spec("app").is_err());
        assert!(parse_app_spec("1app:x").is_err());
        assert!(parse_app_spec("app:x-y").is_err());
        assert!(parse_app_spec("").is_err());
    }
}
