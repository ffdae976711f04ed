//! The shape of `site.toml`: one struct per table, every key optional with a
//! default, unknown keys rejected. `config/site.toml` documents each key for
//! users; keep the two in step.

use super::units::{ByteSize, Seconds};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub app: App,
    pub limits: Limits,
    pub log: Log,
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
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec!["127.0.0.1:8080".into()],
            edge_threads: 2,
            runtime_dir: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct App {
    /// `module:callable` or `module:factory()`.
    pub module: String,
    pub chdir: String,
    pub pythonpath: Vec<String>,
    pub virtualenv: String,
    pub workers: usize,
    pub queue_size: usize,
    pub queue_timeout: Seconds,
    pub graceful_timeout: Seconds,
    /// Extra environment variables for the workers (e.g. DJANGO_SETTINGS_MODULE).
    pub env: BTreeMap<String, String>,
}

impl Default for App {
    fn default() -> Self {
        App {
            module: String::new(),
            chdir: ".".into(),
            pythonpath: Vec::new(),
            virtualenv: String::new(),
            workers: 2,
            queue_size: 1024,
            queue_timeout: Seconds(Duration::from_secs(30)),
            graceful_timeout: Seconds(Duration::from_secs(30)),
            env: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (413 beyond it).
    pub max_body: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: ByteSize(10 << 20),
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
}

impl Default for Log {
    fn default() -> Self {
        Log {
            access: "stdout".into(),
            access_format: "combined".into(),
            level: "info".into(),
        }
    }
}
