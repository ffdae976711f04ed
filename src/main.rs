//! `corral`: one binary that replaces nginx + gunicorn. This file is only the
//! command line; `master::serve` runs a site and `config::load` reads one
//! (the module tree is in lib.rs).

use clap::{Parser, Subcommand};
use corral::{config, logging, master, worker};

/// jemalloc for Rust's allocations (see Cargo.toml for why). Its fork
/// handlers keep the master's fork-at-any-time promise.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "TLS, static files and a supervised pool of embedded-Python workers (WSGI and ASGI, with WebSockets) in one binary",
    after_help = "Examples:\n  corral serve --config site.toml     run the site\n  corral check --config site.toml     validate the config and the app module, list every problem\n  corral reload --config site.toml    reread the config, restart workers one by one (no dropped requests)\n  corral upgrade --config site.toml   start the binary now at this path, hand it the sockets, drain the old one\n  corral stop --config site.toml      graceful stop, waits until everything has exited\n  corral status --config site.toml    workers, what each runs, the queue (--json for machines)\n  corral dump --config site.toml      Python stacks of the workers running requests\n\nSignals to the serving process: TERM = graceful stop, INT/QUIT = fast stop, HUP = reload,\nTTIN/TTOU = one worker more/less, USR1 = reopen log files, USR2 = binary upgrade."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the site: the edge (HTTP listeners) and the pool of Python workers.
    Serve {
        /// The site's config file.
        #[arg(short, long, default_value = "site.toml")]
        config: PathBuf,
    },
    /// Validate a config file and that the app module can be found; exit 1 on any problem.
    Check {
        #[arg(short, long, default_value = "site.toml")]
        config: PathBuf,
    },
    /// Tell a running corral to reread its config and restart its workers (SIGHUP).
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Replace a running corral with the binary now at its path (SIGUSR2),
    /// without dropping a connection; waits until the new one serves.
    Upgrade {
        #[command(flatten)]
        target: Target,
    },
    /// Show what a running corral is doing: its workers, what each runs
    /// and for how long, requests served, memory, the queue.
    Status {
        #[command(flatten)]
        target: Inspect,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the Python stacks of every worker running a request, each
    /// with its requests; nothing is stopped.
    Dump {
        #[command(flatten)]
        target: Inspect,
        #[arg(long)]
        json: bool,
    },
    /// Stop a running corral gracefully (SIGTERM) and wait until it has exited.
    Stop {
        #[command(flatten)]
        target: Target,
        /// Stop at once instead (SIGINT): in-flight requests are cut.
        #[arg(long)]
        fast: bool,
    },
}

/// Which running corral: its pid file, or the config that names one.
#[derive(clap::Args)]
struct Target {
    /// The pid file written by `serve` ([server] pid_file).
    #[arg(long, conflicts_with = "config")]
    pid_file: Option<PathBuf>,
    /// Read [server] pid_file from this config.
    #[arg(short, long, default_value = "site.toml")]
    config: PathBuf,
}

/// Which running corral to ask: its control socket, or the config that
/// says where it is.
#[derive(clap::Args)]
struct Inspect {
    /// The control socket ([server] control_socket).
    #[arg(long, conflicts_with = "config")]
    socket: Option<PathBuf>,
    #[arg(short, long, default_value = "site.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => serve(&config),
        Command::Status { target, json } => ask(&target, "status", json),
        Command::Dump { target, json } => ask(&target, "dump", json),
        Command::Reload { target } => signal(&target, nix::sys::signal::Signal::SIGHUP, false),
        Command::Upgrade { target } => signal(&target, nix::sys::signal::Signal::SIGUSR2, false),
        Command::Stop { target, fast } => {
            let sig = if fast {
                nix::sys::signal::Signal::SIGINT
            } else {
                nix::sys::signal::Signal::SIGTERM
            };
            signal(&target, sig, true)
        }
    }
}

/// Sends one command over the control socket and prints the answer.
fn ask(target: &Inspect, command: &str, json: bool) -> ExitCode {
    let socket = match &target.socket {
        Some(s) => s.clone(),
        None => match config::load(&target.config)
            .map_err(|problems| {
                problems
                    .0
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .and_then(|site| master::find_control_socket(&site).map_err(|e| format!("{e:#}")))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("corral: error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let line = if json {
        format!("{command} json\n")
    } else {
        format!("{command}\n")
    };
    match exchange(&socket, &line) {
        Ok(answer) if answer.starts_with("error: ") => {
            eprint!("corral: {answer}");
            ExitCode::FAILURE
        }
        Ok(answer) => {
            print!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("corral: error: {}: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}

fn exchange(socket: &std::path::Path, line: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::os::unix::net::UnixStream::connect(socket)?;
    // A dump waits up to a few seconds per worker for its stacks.
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    conn.write_all(line.as_bytes())?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

fn signal(target: &Target, sig: nix::sys::signal::Signal, wait: bool) -> ExitCode {
    let (pid_file, wait_for) = match &target.pid_file {
        Some(p) => (p.clone(), std::time::Duration::from_secs(60)),
        None => match config::load(&target.config) {
            Ok(site) => match site.pid_file.clone() {
                Some(p) => (
                    p,
                    site.graceful_timeout() + std::time::Duration::from_secs(10),
                ),
                None => {
                    eprintln!(
                        "corral: error: {}: set [server] pid_file, or pass --pid-file",
                        site.file.display()
                    );
                    return ExitCode::FAILURE;
                }
            },
            Err(problems) => {
                for p in &problems.0 {
                    eprintln!("corral: error: {p}");
                }
                return ExitCode::FAILURE;
            }
        },
    };
    if sig == nix::sys::signal::Signal::SIGHUP {
        return reload(&pid_file);
    }
    if sig == nix::sys::signal::Signal::SIGUSR2 {
        return upgrade(&pid_file);
    }
    match master::signal_running(&pid_file, sig, wait.then_some(wait_for)) {
        Ok(pid) => {
            println!(
                "sent {sig:?} to corral (pid {pid}){}",
                if wait { "; it has stopped" } else { "" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("corral: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP, then wait for the master to say how the reload went (it
/// writes `<pid_file>.reload` once the new code has booted, or failed to).
fn reload(pid_file: &std::path::Path) -> ExitCode {
    let outcome = master::reload_outcome_path(pid_file);
    let before = master::read_reload_outcome(&outcome).map_or(0, |o| o.0);
    let pid = match master::signal_running(pid_file, nix::sys::signal::Signal::SIGHUP, None) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("corral: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("sent SIGHUP to corral (pid {pid}); waiting for the new workers to boot");
    await_outcome("reload", &outcome, || {
        match master::read_reload_outcome(&outcome) {
            Some((n, ok, msg)) if n > before => Some(if ok { Ok(msg) } else { Err(msg) }),
            _ => None,
        }
    })
}

/// SIGUSR2, then wait for the old master to say how the upgrade went (it
/// writes `<pid_file>.upgrade` once the new binary serves, or failed to).
fn upgrade(pid_file: &std::path::Path) -> ExitCode {
    let outcome = master::upgrade_outcome_path(pid_file);
    let _ = std::fs::remove_file(&outcome);
    let pid = match master::signal_running(pid_file, nix::sys::signal::Signal::SIGUSR2, None) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("corral: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("sent SIGUSR2 to corral (pid {pid}); waiting for the new binary to serve");
    await_outcome("upgrade", &outcome, || {
        let said = std::fs::read_to_string(&outcome).unwrap_or_default();
        let said = said.trim();
        if let Some(new) = said.strip_prefix("done ") {
            return Some(Ok(format!(
                "upgraded: corral (pid {new}) serves; the old one (pid {pid}) drains and exits"
            )));
        }
        let why = said.strip_prefix("failed ")?;
        Some(Err(format!(
            "upgrade failed: {why}; pid {pid} keeps serving"
        )))
    })
}

/// Polls `outcome` (what the master wrote at `path`) for up to 180 s: Ok is
/// printed, Err is an error.
fn await_outcome(
    what: &str,
    path: &std::path::Path,
    mut outcome: impl FnMut() -> Option<Result<String, String>>,
) -> ExitCode {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while std::time::Instant::now() < deadline {
        match outcome() {
            Some(Ok(msg)) => {
                println!("{msg}");
                return ExitCode::SUCCESS;
            }
            Some(Err(msg)) => {
                eprintln!("corral: error: {msg}");
                return ExitCode::FAILURE;
            }
            None => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    eprintln!(
        "corral: error: no {what} outcome in {} after 180 s",
        path.display()
    );
    ExitCode::FAILURE
}

fn load(path: &std::path::Path) -> Result<config::Site, ExitCode> {
    let site = config::load(path).map_err(|problems| {
        for p in &problems.0 {
            eprintln!("corral: error: {p}");
        }
        ExitCode::FAILURE
    })?;
    for w in &site.warnings {
        eprintln!("corral: warning: {w}");
    }
    // Finding the app module needs Python, which the master must never
    // initialise (it forks): a short-lived child answers instead.
    if let Err(msg) = worker::probe::find_app_module(&site) {
        eprintln!("corral: error: {}", site.problem_at("app.module", msg));
        return Err(ExitCode::FAILURE);
    }
    Ok(site)
}

/// Everything `serve` would fail on: the config, the app's import (run in
/// a short-lived child, as a worker would), and the listening addresses.
fn check(path: &std::path::Path) -> ExitCode {
    let site = match load(path) {
        Ok(site) => site,
        Err(code) => return code,
    };
    let mut ok = true;
    match worker::probe::load_app(&site) {
        Ok(serves) => println!("app: {}:{} is {serves}", site.app.module, site.app.callable),
        Err(msg) => {
            eprintln!("corral: error: {}", site.problem_at("app.module", msg));
            ok = false;
        }
    }
    if let Some(acme) = site.tls.as_ref().and_then(|t| t.acme.as_ref()) {
        println!(
            "acme: a certificate for {} from {} by {} ({}), kept in {}",
            acme.hosts.join(", "),
            acme.directory,
            acme.challenge.as_str(),
            acme.challenge_why,
            acme.state_dir.display()
        );
    }
    match master::check_listeners(&site) {
        Ok(in_use) => in_use
            .iter()
            .for_each(|w| eprintln!("corral: warning: {w}")),
        Err(e) => {
            eprintln!("corral: {e:#}");
            ok = false;
        }
    }
    if !ok {
        return ExitCode::FAILURE;
    }
    println!("ok: {}", site.file.display());
    ExitCode::SUCCESS
}

fn serve(path: &std::path::Path) -> ExitCode {
    let site = match load(path) {
        Ok(site) => site,
        Err(code) => return code,
    };
    if let Err(e) = logging::init(&site.config.log.level) {
        eprintln!("corral: error: {e:#}");
        return ExitCode::FAILURE;
    }
    match master::serve(site) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral: {e:#}");
            ExitCode::FAILURE
        }
    }
}
