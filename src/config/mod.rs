//! Configuration: one TOML file (`site.toml`) read once by the master and
//! handed, already validated, to the edge and the workers it forks.
//!
//! `load` returns either a [`Site`] (paths resolved against the config file's
//! folder, addresses parsed) or every problem found, each naming the file,
//! line and key.

mod acme;
mod diagnostics;
pub mod schema;
pub mod tls;
pub mod units;
mod validate;

pub use diagnostics::{Problem, Problems};
pub use schema::Config;

use diagnostics::{blank_lines, section_at, Source};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated configuration with everything resolved.
#[derive(Debug, Clone)]
pub struct Site {
    /// The config file, as given on the command line (absolute).
    pub file: PathBuf,
    pub config: Config,
    pub listen: Vec<SocketAddr>,
    /// Listeners (plain or TLS) that expect a PROXY protocol header.
    pub proxy_protocol: Vec<SocketAddr>,
    /// `[metrics] listen`, if on.
    pub metrics_listen: Option<SocketAddr>,
    pub app: AppSpec,
    /// Workers run here; it is also first on sys.path.
    pub chdir: PathBuf,
    pub pythonpath: Vec<PathBuf>,
    pub virtualenv: Option<PathBuf>,
    pub access_log: AccessLog,
    pub pid_file: Option<PathBuf>,
    /// `[server] control_socket`, resolved; None: in the runtime dir.
    pub control_socket: Option<PathBuf>,
    /// `[[static]]` mounts, longest URL prefix first.
    pub static_mounts: Vec<Mount>,
    pub tls: Option<TlsSite>,
    /// Not errors, but worth saying at `check` and start (expiring certificates...).
    pub warnings: Vec<Problem>,
}

/// A validated `[tls]` table.
#[derive(Debug, Clone)]
pub struct TlsSite {
    pub listen: Vec<SocketAddr>,
    pub certs: Vec<TlsCertFiles>,
    pub client_ca: Option<PathBuf>,
    pub client_required: bool,
    pub hsts: String,
    pub redirect_http: bool,
    pub acme: Option<AcmeSite>,
}

/// A validated `[tls.acme]` table.
#[derive(Debug, Clone)]
pub struct AcmeSite {
    /// Lowercase DNS names, in the order given; the certificate covers all.
    pub hosts: Vec<String>,
    pub email: Option<String>,
    pub directory: String,
    pub ca_roots: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub challenge: Challenge,
    /// Why `challenge` is what it is, for `corral check`.
    pub challenge_why: &'static str,
    pub renew_before: std::time::Duration,
}

/// How the CA checks that corral answers for a host (RFC 8555 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 8737: a TLS handshake on port 443 with ALPN `acme-tls/1`.
    TlsAlpn01,
    /// `GET /.well-known/acme-challenge/<token>` on port 80.
    Http01,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Http01 => "http-01",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsCertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SNI names (from the config, or the certificate's own names).
    pub hosts: Vec<String>,
}

/// A resolved `[[static]]` mount.
#[derive(Debug, Clone)]
pub struct Mount {
    pub url: String,
    /// Canonical folder path.
    pub dir: PathBuf,
    pub settings: schema::StaticMount,
}

/// Which callable in which module is the WSGI app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub module: String,
    pub callable: String,
    /// `module:factory()`: call it (no arguments) to get the app.
    pub factory: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(PathBuf),
}

impl Site {
    /// Whether workers measure each request's CPU and memory: only for an
    /// access log that writes them (`[log] request_costs`).
    pub fn measures_requests(&self) -> bool {
        self.config.log.request_costs && !matches!(self.access_log, AccessLog::Off)
    }

    /// `[app] root_path`: "" or "/blog" (checked).
    pub fn root_path(&self) -> &str {
        &self.config.app.root_path
    }

    /// `[app] workers`; `"auto"` is sized by the master (`master/sizing.rs`).
    pub fn workers(&self) -> crate::config::units::WorkerCount {
        self.config.app.workers
    }
    pub fn queue_timeout(&self) -> Duration {
        self.config.app.queue_timeout.0
    }
    pub fn graceful_timeout(&self) -> Duration {
        self.config.app.graceful_timeout.0
    }
    /// Request deadline; `None` when `app.timeout = 0`.
    pub fn timeout(&self) -> Option<Duration> {
        Some(self.config.app.timeout.0).filter(|d| !d.is_zero())
    }
    pub fn threads(&self) -> usize {
        self.config.app.threads
    }
    /// A problem found after loading (app import, bind failure), located at
    /// `key` in the config file.
    pub fn problem_at(&self, key: &str, message: impl Into<String>) -> Problem {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        Source::new(&self.file, &text).at_key(key, message)
    }
}

/// Reads and validates a config file. Problems are all collected, not just
/// the first, so `corral check` can list them at once.
pub fn load(path: &Path) -> Result<Site, Problems> {
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string(&file).map_err(|e| {
        Problems(vec![Problem {
            file: file.clone(),
            line: None,
            key: None,
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    let source = Source::new(&file, &text);
    let (config, mut problems) = parse_collecting(&source);
    let Some(config) = config else {
        return Err(Problems(problems));
    };
    let mut warnings = Vec::new();
    let site = validate::validate(&source, config, &mut problems, &mut warnings);
    problems.sort_by_key(|p| p.line);
    match site {
        Some(mut site) if problems.is_empty() => {
            site.warnings = warnings;
            Ok(site)
        }
        _ => Err(Problems(problems)),
    }
}

/// Deserializes with serde; on each error records it, blanks its line and
/// tries again, so one run reports every key-level problem.
fn parse_collecting(source: &Source) -> (Option<Config>, Vec<Problem>) {
    let mut text = source.text.to_string();
    let mut problems = Vec::new();
    for _ in 0..64 {
        match toml::from_str::<Config>(&text) {
            Ok(cfg) => return (Some(cfg), problems),
            Err(e) => {
                let message = e
                    .message()
                    .replace("unknown field", "unknown key")
                    .replace("missing field", "missing key");
                let Some(span) = e.span() else {
                    problems.push(Problem {
                        file: source.file.to_path_buf(),
                        line: None,
                        key: None,
                        message,
                    });
                    return (None, problems);
                };
                let syntax_error = toml::de::DeTable::parse(&text).is_err();
                let unknown = message.starts_with("unknown key");
                problems.push(Problem {
                    file: source.file.to_path_buf(),
                    line: Some(source.line_col(span.start)),
                    key: if syntax_error {
                        None
                    } else {
                        source.key_at(&span)
                    },
                    message,
                });
                if syntax_error || span.is_empty() && span.start >= text.len() {
                    return (None, problems);
                }
                let blank = section_at(&text, &span).filter(|_| unknown).unwrap_or(span);
                blank_lines(&mut text, &blank);
            }
        }
    }
    (None, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .unwrap();
        p
    }

    #[test]
    fn reports_every_problem_with_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app.py", "application = None\n");
        let cfg = write(
            dir.path(),
            "site.toml",
            "[server]\nlisen = [\"127.0.0.1:1\"]\n[app]\nmodule = \"app:application\"\nworkers = \"two\"\n",
        );
        let err = load(&cfg).unwrap_err().to_string();
        assert!(err.contains(":2:1: server.lisen: unknown key"), "{err}");
        assert!(err.contains(":5:") && err.contains("app.workers"), "{err}");
    }

    #[test]
    fn resolves_paths_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let cfg = write(
            dir.path(),
            "site.toml",
            "[server]\nlisten = [\"[::1]:8080\"]\n[app]\nmodule = \"app:make()\"\nchdir = \"src\"\nqueue_timeout = \"500ms\"\n",
        );
        let site = load(&cfg).unwrap();
        assert_eq!(site.chdir, dir.path().join("src"));
        assert_eq!(site.listen[0].to_string(), "[::1]:8080");
        assert!(site.app.factory);
        assert_eq!(site.queue_timeout(), Duration::from_millis(500));
    }

    #[test]
    fn requests_are_measured_only_for_an_access_log_that_wants_it() {
        let dir = tempfile::tempdir().unwrap();
        let measured = |log: &str| {
            let text = format!("[app]\nmodule = \"app:application\"\n[log]\n{log}\n");
            load(&write(dir.path(), "site.toml", &text))
                .unwrap()
                .measures_requests()
        };
        assert!(measured(""), "by default (access to stdout)");
        assert!(!measured("access = \"off\""));
        assert!(!measured("request_costs = false"));
    }

    #[test]
    fn syntax_errors_stop_with_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "site.toml", "[server\nlisten = 1\n");
        let err = load(&cfg).unwrap_err().to_string();
        assert!(err.contains("site.toml:1:"), "{err}");
    }
}
