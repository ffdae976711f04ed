//! The control socket (`[server] control_socket`): a Unix socket the master
//! binds (mode 0600) and every edge serves, for `corral status` and
//! `corral dump`. One command line in, one answer out, then close:
//! `status`, `status json`, `dump`, `dump json`.

use super::Inspector;
use crate::edge::inherited::accept_until_stopped;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::debug;

/// A client that sends no command within this long is dropped.
const COMMAND_WITHIN: Duration = Duration::from_secs(5);

/// What a client may ask.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Status { json: bool },
    Dump { json: bool },
}

fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("");
    let json = match words.next() {
        None => false,
        Some("json") => true,
        Some(other) => return Err(format!("unknown option `{other}` (only `json`)")),
    };
    match verb {
        "status" => Ok(Command::Status { json }),
        "dump" => Ok(Command::Dump { json }),
        other => Err(format!("unknown command `{other}` (status, dump)")),
    }
}

pub struct ControlSocket {
    pub inspector: Arc<Inspector>,
    pub fd: Mutex<Option<RawFd>>,
}

#[async_trait]
impl BackgroundService for ControlSocket {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let inspector = &self.inspector;
        let serve = |conn| {
            tokio::spawn(answer(inspector.clone(), conn));
        };
        let state = &inspector.state;
        accept_until_stopped::<UnixListener>(&self.fd, "control socket", state, serve).await;
    }
}

async fn answer(inspector: Arc<Inspector>, conn: UnixStream) {
    let (rx, mut tx) = conn.into_split();
    let mut line = String::new();
    let mut rx = BufReader::new(rx.take(4096));
    let read = tokio::time::timeout(COMMAND_WITHIN, rx.read_line(&mut line)).await;
    let reply = match read {
        Ok(Ok(_)) => match parse(&line) {
            Ok(cmd) => run(&inspector, cmd).await,
            Err(e) => format!("error: {e}\n"),
        },
        _ => return debug!("control socket: no command"),
    };
    if let Err(e) = tx.write_all(reply.as_bytes()).await {
        debug!("control socket: the client left: {e}");
    }
}

async fn run(inspector: &Inspector, cmd: Command) -> String {
    match cmd {
        Command::Status { json: false } => super::text(&inspector.status()),
        Command::Status { json: true } => to_json(&inspector.status()),
        Command::Dump { json } => {
            let dumped = super::dump::dump(inspector).await;
            if json {
                to_json(&dumped)
            } else {
                super::dump::text(&dumped)
            }
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).map_or_else(|e| format!("error: {e}\n"), |s| s + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("status\n"), Ok(Command::Status { json: false }));
        assert_eq!(parse("dump json\n"), Ok(Command::Dump { json: true }));
        assert!(parse("reload\n")
            .unwrap_err()
            .contains("unknown command `reload`"));
        assert!(parse("status yaml").unwrap_err().contains("`yaml`"));
    }
}
