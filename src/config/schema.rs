//! The shape of `site.toml`: one struct per table, every key optional with a
//! default, unknown keys rejected. `config/site.toml` documents each key for
//! users; keep the two in step.

use super::units::{ByteSize, Seconds, WorkerCount};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub app: App,
    #[serde(rename = "static")]
    pub static_mounts: Vec<StaticMount>,
    pub compression: Compression,
    pub tls: Tls,
    pub limits: Limits,
    pub log: Log,
    pub websocket: Websocket,
    pub metrics: Metrics,
}

/// `[websocket]`: WebSockets to ASGI apps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Websocket {
    /// Largest message (and frame) a client may send; bigger closes with 1009.
    pub max_message: ByteSize,
    /// A ping this often keeps idle sockets alive through NATs and proxies (0 = off).
    pub ping_interval: Seconds,
    /// Close (1001) a socket the client sent nothing on, not even a pong, for this long (0 = never).
    pub idle_timeout: Seconds,
    /// Agree to permessage-deflate when a client offers it (RFC 7692).
    pub compression: bool,
}

impl Default for Websocket {
    fn default() -> Self {
        Websocket {
            max_message: ByteSize(16 << 20),
            ping_interval: Seconds(Duration::from_secs(20)),
            idle_timeout: Seconds(Duration::from_secs(60)),
            compression: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Plain-HTTP listeners, `host:port` (IPv6 as `[::1]:8080`).
    pub listen: Vec<String>,
    /// Tokio threads in the edge process.
    pub edge_threads: usize,
    /// Where worker sockets live; empty = a fresh private folder under
    /// `$XDG_RUNTIME_DIR` or the system temp dir.
    pub runtime_dir: String,
    /// Master pid written here (for `corral reload` / `corral stop`).
    pub pid_file: String,
    /// Unix socket for `corral status` and `corral dump` (mode 0600);
    /// empty = `control.sock` in the runtime dir.
    pub control_socket: String,
    /// Run the edge and workers as this user/group (the master binds ports first).
    pub user: String,
    pub group: String,
    /// Accept cleartext HTTP/2 (prior knowledge) on the plain listeners.
    pub h2c: bool,
    /// Peers (IPs or CIDRs) whose X-Forwarded-For / X-Forwarded-Proto are
    /// believed, e.g. a load balancer in front of corral.
    pub trusted_proxies: Vec<String>,
    /// Listeners (from `listen` or `tls.listen`) whose connections start
    /// with a PROXY protocol header (v1 or v2) naming the real client.
    pub proxy_protocol: Vec<String>,
    /// Answered by the edge itself for load balancers: 200 while a worker
    /// is ready and the site is not draining, else 503 (empty = off).
    pub health_path: String,
    /// On SIGTERM, how long the health path answers 503 while requests are
    /// still served, before listeners close (so a load balancer stops first).
    pub drain_delay: Seconds,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec!["127.0.0.1:8080".into()],
            edge_threads: 2,
            runtime_dir: String::new(),
            pid_file: String::new(),
            control_socket: String::new(),
            user: String::new(),
            group: String::new(),
            h2c: false,
            trusted_proxies: Vec::new(),
            proxy_protocol: Vec::new(),
            health_path: String::new(),
            drain_delay: Seconds(Duration::ZERO),
        }
    }
}

/// `[app] cpu_scheduling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CpuScheduling {
    /// SCHED_BATCH: a woken process does not preempt the one running.
    #[default]
    Batch,
    /// The default policy, as for any other process.
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct App {
    /// `module:callable` or `module:factory()`.
    pub module: String,
    pub chdir: String,
    pub pythonpath: Vec<String>,
    pub virtualenv: String,
    /// A number, or "auto" (CPUs and memory of the machine or container).
    pub workers: WorkerCount,
    pub queue_size: usize,
    pub queue_timeout: Seconds,
    pub graceful_timeout: Seconds,
    /// A request running longer gets 504 and its worker is replaced (0 = never).
    pub timeout: Seconds,
    /// An idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) whose
    /// worker went away before answering runs once more on another.
    pub retry_idempotent: bool,
    /// Recycle a worker after this many requests (0 = never), plus a random
    /// 0..=jitter so workers do not all recycle at once.
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// Recycle a worker whose resident memory exceeds this (0 = never).
    pub max_rss: ByteSize,
    /// Recycle a worker older than this (0 = never).
    pub max_lifetime: Seconds,
    /// Python threads per worker (gunicorn's gthread when > 1).
    pub threads: usize,
    /// Import the app once in the master and fork workers from it.
    pub preload: bool,
    /// Extra environment variables for the workers (e.g. DJANGO_SETTINGS_MODULE).
    pub env: BTreeMap<String, String>,
    /// WSGI or ASGI; `auto` looks at the callable (an `async def` is ASGI).
    pub interface: Interface,
    /// ASGI lifespan events (startup/shutdown).
    pub lifespan: Lifespan,
    /// The ASGI worker's event loop.
    #[serde(rename = "loop")]
    pub event_loop: EventLoop,
    /// ASGI: requests and WebSockets one worker runs at once.
    pub concurrency: usize,
    /// How Linux schedules the workers (`cpu_policy.rs`).
    pub cpu_scheduling: CpuScheduling,
    /// The URL path the app is mounted at ("" = the site's root): WSGI's
    /// SCRIPT_NAME, ASGI's root_path.
    pub root_path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    #[default]
    Auto,
    Wsgi,
    Asgi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Lifespan {
    /// Run it; an app that does not speak lifespan is served without it.
    #[default]
    Auto,
    /// Run it; any failure is a boot failure.
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EventLoop {
    /// uvloop when the virtualenv has it, else asyncio's own.
    #[default]
    Auto,
    Asyncio,
    Uvloop,
}

impl Default for App {
    fn default() -> Self {
        App {
            module: String::new(),
            chdir: ".".into(),
            pythonpath: Vec::new(),
            virtualenv: String::new(),
            workers: WorkerCount::Fixed(2),
            queue_size: 1024,
            queue_timeout: Seconds(Duration::from_secs(30)),
            graceful_timeout: Seconds(Duration::from_secs(30)),
            timeout: Seconds(Duration::from_secs(30)),
            retry_idempotent: true,
            max_requests: 0,
            max_requests_jitter: 0,
            max_rss: ByteSize(0),
            max_lifetime: Seconds(Duration::ZERO),
            threads: 1,
            preload: false,
            env: BTreeMap::new(),
            interface: Interface::Auto,
            lifespan: Lifespan::Auto,
            event_loop: EventLoop::Auto,
            concurrency: 1000,
            cpu_scheduling: CpuScheduling::Batch,
            root_path: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (413 beyond it).
    pub max_body: ByteSize,
    /// Longest request line (414 beyond it).
    pub max_request_line: ByteSize,
    /// Largest request head, request line included (431 beyond it).
    pub max_header_size: ByteSize,
    /// Most header fields in a request (431 beyond it).
    pub max_headers: usize,
    /// Longest wait for the next piece of a request body, and for the
    /// whole body (408 beyond it).
    pub body_timeout: Seconds,
    /// How long an idle keep-alive connection is kept open.
    pub keepalive_timeout: Seconds,
    /// Requests per second allowed per client IP, e.g. "20r/s" or "600r/m"
    /// (empty: no limit); beyond it, 429 with Retry-After.
    pub rate: String,
    /// Requests a client may send at once above `rate` before being limited.
    pub burst: u32,
    /// Longest time a client may take to send a whole request head (and,
    /// for the first request, the TLS handshake); beyond it, 408 and close.
    pub header_timeout: Seconds,
    /// Most client connections open at once; past it new connections wait
    /// in the listen backlog. 0: no limit.
    pub max_connections: usize,
    /// Most connections open at once from one client address (503 beyond
    /// it). 0: no limit.
    pub max_connections_per_ip: usize,
    /// Of each app response, how much the edge holds in memory while the
    /// client is slower than the app; the rest goes to a temp file.
    pub response_buffer: ByteSize,
    /// Memory for all buffered response bodies together.
    pub buffer_memory: ByteSize,
    /// Largest temp file for one response; past it the worker waits for
    /// the client.
    pub max_temp_file: ByteSize,
    /// Overrides for URL prefixes (`[[limits.route]]`): the longest
    /// matching prefix wins.
    pub route: Vec<RouteLimits>,
}

/// Limits for one URL prefix; unset keys keep the `[limits]` value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteLimits {
    /// URL path prefix, e.g. "/upload/" (matched on the decoded path).
    pub path: String,
    pub max_body: Option<ByteSize>,
    pub body_timeout: Option<Seconds>,
    /// Its own per-IP rate (and burst), counted apart from the global one.
    pub rate: Option<String>,
    pub burst: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: ByteSize(10 << 20),
            max_request_line: ByteSize(8 << 10),
            max_header_size: ByteSize(64 << 10),
            max_headers: 100,
            body_timeout: Seconds(Duration::from_secs(60)),
            keepalive_timeout: Seconds(Duration::from_secs(75)),
            rate: String::new(),
            burst: 0,
            header_timeout: Seconds(Duration::from_secs(10)),
            max_connections: 10_000,
            max_connections_per_ip: 0,
            response_buffer: ByteSize(1 << 20),
            buffer_memory: ByteSize(256 << 20),
            max_temp_file: ByteSize(1 << 30),
            route: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// "stdout", "off", or a file path.
    pub access: String,
    /// "combined" (nginx's default) or "json".
    pub access_format: String,
    /// Error log level: error, warn, info, debug, trace.
    pub level: String,
    /// Measure each WSGI request's worker CPU time and memory change for
    /// the access log (`worker_cpu_ms`, `rss_delta_kb`).
    pub request_costs: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            access: "stdout".into(),
            access_format: "combined".into(),
            level: "info".into(),
            request_costs: true,
        }
    }
}

/// One `[[static]]` mount: files under `dir` served at `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticMount {
    /// URL prefix, e.g. "/static/" (must start and end with "/").
    pub url: String,
    /// Folder, relative to the config file.
    pub dir: String,
    /// Cache-Control header for hits, e.g. "public, max-age=31536000, immutable".
    pub cache_control: String,
    /// Files tried for a directory request.
    pub index: Vec<String>,
    /// "app": a miss goes to the app instead of 404.
    pub fallback: String,
    /// HTML listing of directories without an index file.
    pub autoindex: bool,
    /// Follow symlinks that leave `dir` (refused by default).
    pub follow_symlinks: bool,
    /// Serve names starting with "." (denied by default).
    pub dotfiles: bool,
    /// Serve `file.br` / `file.zst` / `file.gz` siblings when the client accepts them.
    pub precompressed: bool,
}

impl Default for StaticMount {
    fn default() -> Self {
        StaticMount {
            url: String::new(),
            dir: String::new(),
            cache_control: String::new(),
            index: vec!["index.html".into()],
            fallback: String::new(),
            autoindex: false,
            follow_symlinks: false,
            dotfiles: false,
            precompressed: true,
        }
    }
}

/// `[metrics]`: Prometheus metrics, on a listener of their own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// `host:port` serving `GET /metrics`; empty = off. Keep it private
    /// (127.0.0.1 or an internal network): it is never on a site listener.
    pub listen: String,
}

/// Compression of app responses by the edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Compression {
    pub enabled: bool,
    /// 1 (fast) to 9 (small); applied to gzip, brotli and zstd alike.
    pub level: u32,
    /// Smaller responses are sent as they are.
    pub min_size: ByteSize,
    /// Content types worth compressing (parameters such as charset ignored).
    pub types: Vec<String>,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: true,
            level: 5,
            min_size: ByteSize(1024),
            types: [
                "text/html",
                "text/css",
                "text/plain",
                "text/xml",
                "text/csv",
                "text/javascript",
                "application/javascript",
                "application/json",
                "application/xml",
                "application/rss+xml",
                "application/atom+xml",
                "application/manifest+json",
                "image/svg+xml",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

/// `[tls]`: HTTPS listeners and their certificates.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub listen: Vec<String>,
    /// Plain-HTTP listeners answer with a redirect to https.
    pub redirect_http: bool,
    /// Strict-Transport-Security value for TLS responses (empty: none).
    pub hsts: String,
    /// CA bundle (PEM) for client certificates; empty: no client auth.
    pub client_ca: String,
    /// "required" or "optional" (only with client_ca).
    pub client_auth: String,
    pub cert: Vec<TlsCert>,
    /// `[tls.acme]`: certificates obtained and renewed by corral.
    pub acme: Option<TlsAcme>,
}

/// `[tls.acme]`: one certificate for `hosts`, ordered from an ACME CA
/// (RFC 8555) and renewed before it expires.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsAcme {
    pub hosts: Vec<String>,
    /// Contact address for the CA's expiry and policy mail (optional).
    pub email: String,
    /// "letsencrypt", "letsencrypt-staging" or the CA's directory URL.
    pub directory: String,
    /// PEM file of extra roots to trust the CA's own HTTPS with.
    pub ca_roots: String,
    /// Account key, certificate and key live here (created 0700).
    pub state_dir: String,
    /// "tls-alpn-01" or "http-01"; empty: chosen from the listeners.
    pub challenge: String,
    pub renew_before: Option<Seconds>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsCert {
    /// Full chain, PEM.
    pub cert: String,
    /// PKCS#8, PKCS#1 or SEC1 key, PEM.
    pub key: String,
    /// SNI names served with this certificate ("*.example.com" allowed).
    pub hosts: Vec<String>,
}
