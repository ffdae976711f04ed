//! The two pipes between processes, and what travels on them.
//!
//! * status pipe, every child → master: `ready <pid>` once a child can take
//!   work, `fail <pid> <reason>` just before a child gives up at boot.
//! * control pipe, master → edge: `up <id> <socket>` when a worker is ready,
//!   `down <id>` when it must get no more requests (dying or draining).
//!
//! Messages are single lines shorter than PIPE_BUF, so writes from several
//! children never interleave.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Longest reason carried in a `fail` line (PIPE_BUF is 4096 on Linux).
const MAX_REASON: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ready(i32),
    Failed(i32, String),
}

impl Status {
    pub fn encode(&self) -> String {
        match self {
            Status::Ready(pid) => format!("ready {pid}\n"),
            Status::Failed(pid, reason) => {
                let mut r: String = reason.replace(['\n', '\r'], " ");
                if r.len() > MAX_REASON {
                    let mut cut = MAX_REASON;
                    while !r.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    r.truncate(cut);
                }
                format!("fail {pid} {r}\n")
            }
        }
    }

    pub fn decode(line: &str) -> Option<Status> {
        let mut parts = line.splitn(3, ' ');
        let kind = parts.next()?;
        let pid = parts.next()?.trim().parse().ok()?;
        match kind {
            "ready" => Some(Status::Ready(pid)),
            "fail" => Some(Status::Failed(pid, parts.next().unwrap_or("").to_string())),
            _ => None,
        }
    }
}

/// Sends a status line to the master. Best effort: if the master is gone we
/// are about to die from PDEATHSIG anyway.
pub fn send_status(fd: RawFd, status: &Status) {
    // SAFETY: the fd is the inherited status pipe, open for the child's life.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = nix::unistd::write(fd, status.encode().as_bytes());
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Up { id: u64, socket: String },
    Down { id: u64 },
}

impl Control {
    pub fn encode(&self) -> String {
        match self {
            Control::Up { id, socket } => format!("up {id} {socket}\n"),
            Control::Down { id } => format!("down {id}\n"),
        }
    }

    pub fn decode(line: &str) -> Option<Control> {
        let mut parts = line.trim_end().splitn(3, ' ');
        let kind = parts.next()?;
        let id = parts.next()?.parse().ok()?;
        match kind {
            "up" => Some(Control::Up {
                id,
                socket: parts.next()?.to_string(),
            }),
            "down" => Some(Control::Down { id }),
            _ => None,
        }
    }
}

/// Writes one control line; a full pipe (edge stuck) drops the message
/// rather than blocking the master.
pub fn send_control(pipe: &mut std::fs::File, msg: &Control) -> std::io::Result<()> {
    let _ = pipe.as_raw_fd();
    pipe.write_all(msg.encode().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            Status::Ready(12),
            Status::Failed(3, "ImportError: x y".into()),
        ] {
            assert_eq!(Status::decode(s.encode().trim_end()), Some(s));
        }
        for c in [
            Control::Up {
                id: 7,
                socket: "/run/c/w7.sock".into(),
            },
            Control::Down { id: 7 },
        ] {
            assert_eq!(Control::decode(&c.encode()), Some(c));
        }
        assert_eq!(Status::decode("bogus 1"), None);
        assert!(Status::Failed(1, "x\ny".repeat(2000)).encode().len() < 1100);
    }
}
