//! `corral`: one binary that replaces nginx + gunicorn. This file is only the
//! command line; `master::serve` runs a site and `config::load` reads one.

mod config;
mod edge;
mod ipc;
mod logging;
mod master;
mod worker;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "TLS, static files and a supervised pool of embedded-Python WSGI workers in one binary",
    after_help = "Examples:\n  corral serve --config site.toml     run the site\n  corral check --config site.toml     validate the config and the app module, list every problem\n\nSignals to the serving process: TERM = graceful stop, INT/QUIT = fast stop,\nTTIN/TTOU = one worker more/less."
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => serve(&config),
    }
}

fn load(path: &std::path::Path) -> Result<config::Site, ExitCode> {
    let site = config::load(path).map_err(|problems| {
        for p in &problems.0 {
            eprintln!("corral: error: {p}");
        }
        ExitCode::FAILURE
    })?;
    // Finding the app module needs Python, which the master must never
    // initialise (it forks): a short-lived child answers instead.
    if let Err(msg) = worker::probe::find_app_module(&site) {
        eprintln!("corral: error: {}", site.problem_at("app.module", msg));
        return Err(ExitCode::FAILURE);
    }
    Ok(site)
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(site) => {
            println!("ok: {}", site.file.display());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
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
