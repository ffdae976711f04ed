//! The error log: tracing to stderr, shared by every process. Lines carry the
//! process role (`master`, `edge`, `worker`) so interleaved output stays
//! readable. The access log is separate (see `edge::access_log`).

use tracing_subscriber::EnvFilter;

pub fn init(level: &str) -> anyhow::Result<()> {
    // RUST_LOG wins over the config file for one-off debugging.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},pingora_core=warn,pingora_proxy=warn,pingora=warn,pingora_core::server::transfer_fd=off,rustls=error"
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::worker::stderr_lines::LogWriter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}
