//! The two pipes between processes, and what travels on them.
//!
//! * status pipe, every child → master: `ready <pid> [asgi:1000]` once a
//!   child can take work (a worker says what it serves), `fail <pid> <reason>` just before a child gives up at boot,
//!   `retire <pid> <reason>` when a worker wants replacing (max_requests,
//!   max_rss, max_lifetime), `timeout <worker id> <request>` from the edge
//!   when a request overran `app.timeout`.
//! * control pipe, master → edge: `up <id> <wsgi:4> <socket>` when a worker
//!   is ready,
//!   `down <id>` when it must get no more requests (dying or draining).
//!
//! Messages are single lines shorter than PIPE_BUF, so writes from several
//! children never interleave.

use std::io::Write;
use std::os::fd::{BorrowedFd, RawFd};

/// Longest reason carried in a `fail` line (PIPE_BUF is 4096 on Linux).
const MAX_REASON: usize = 1000;

/// The protocol a worker speaks to its app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Wsgi,
    Asgi,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Wsgi => "wsgi",
            Interface::Asgi => "asgi",
        }
    }
}

/// What a ready worker serves: its interface, and how many requests it
/// takes at once (WSGI: `threads`; ASGI: `concurrency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serves {
    pub interface: Interface,
    pub capacity: usize,
}

impl Serves {
    fn encode(&self) -> String {
        format!("{}:{}", self.interface.as_str(), self.capacity)
    }

    fn decode(s: &str) -> Option<Serves> {
        let (kind, n) = s.split_once(':')?;
        let interface = match kind {
            "wsgi" => Interface::Wsgi,
            "asgi" => Interface::Asgi,
            _ => return None,
        };
        Some(Serves {
            interface,
            capacity: n.parse().ok().filter(|&n| n > 0)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A child can take work; a worker says what it serves.
    Ready(i32, Option<Serves>),
    Failed(i32, String),
    Retire(i32, String),
    /// Worker id (not pid: the edge only knows ids) and the request.
    Timeout(u64, String),
    /// The edge stopped using worker id after a failed exchange.
    Suspect(u64),
    /// Worker id went away with a request in hand (the request may be what
    /// killed it); the edge stopped using it.
    Vanished(u64),
    /// Requests waiting in the edge's queue (sent when it changes, at
    /// most once a second), for systemd's STATUS.
    Queued(u64),
}

impl Status {
    pub fn encode(&self) -> String {
        match self {
            Status::Ready(pid, None) => format!("ready {pid}\n"),
            Status::Ready(pid, Some(s)) => format!("ready {pid} {}\n", s.encode()),
            Status::Failed(pid, reason) => format!("fail {pid} {}\n", one_line(reason)),
            Status::Retire(pid, reason) => format!("retire {pid} {}\n", one_line(reason)),
            Status::Timeout(id, what) => format!("timeout {id} {}\n", one_line(what)),
            Status::Suspect(id) => format!("suspect {id}\n"),
            Status::Vanished(id) => format!("vanished {id}\n"),
            Status::Queued(n) => format!("queued {n}\n"),
        }
    }

    pub fn decode(line: &str) -> Option<Status> {
        let mut parts = line.splitn(3, ' ');
        let kind = parts.next()?;
        let num = parts.next()?.trim();
        let rest = parts.next().unwrap_or("").to_string();
        match kind {
            "ready" if rest.is_empty() => Some(Status::Ready(num.parse().ok()?, None)),
            "ready" => Some(Status::Ready(
                num.parse().ok()?,
                Some(Serves::decode(&rest)?),
            )),
            "fail" => Some(Status::Failed(num.parse().ok()?, rest)),
            "retire" => Some(Status::Retire(num.parse().ok()?, rest)),
            "timeout" => Some(Status::Timeout(num.parse().ok()?, rest)),
            "suspect" => Some(Status::Suspect(num.parse().ok()?)),
            "vanished" => Some(Status::Vanished(num.parse().ok()?)),
            "queued" => Some(Status::Queued(num.parse().ok()?)),
            _ => None,
        }
    }
}

/// A reason squeezed onto one line short enough for an atomic pipe write.
fn one_line(reason: &str) -> String {
    let mut r: String = reason.replace(['\n', '\r'], " ");
    if r.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
    }
    r
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
    Up {
        id: u64,
        pid: i32,
        serves: Serves,
        /// Why the worker it took over from was replaced (`corral status`).
        replaced: Option<String>,
        /// Milliseconds since it was started (its age survives a new edge).
        age_ms: u64,
        /// The reload generation whose code it runs: edges prefer the
        /// newest code among the least busy workers.
        code: u64,
        socket: String,
    },
    Down {
        id: u64,
    },
    /// SIGUSR1 reached the master: reopen log files (after rotation).
    ReopenLogs,
    /// What the health path reports beyond the edge's own facts: how many
    /// workers the master wants, and whether the site is draining
    /// (`[server] drain_delay` after SIGTERM: health answers 503).
    Health {
        target_workers: u64,
        draining: bool,
    },
    /// A worker was (or is being) replaced, for this reason (one word:
    /// timeout, max_requests, max_rss, max_lifetime, crash, oom, reload,
    /// scale).
    Restart {
        reason: String,
        /// How many: 1 as it happens; a new edge is told each total so far.
        count: u64,
    },
    /// Workers starting and workers finishing their last requests.
    Workers {
        booting: u64,
        draining: u64,
    },
    /// A worker's resident memory, sampled every few seconds.
    Rss {
        id: u64,
        bytes: u64,
    },
}

impl Control {
    pub fn encode(&self) -> String {
        match self {
            Control::Up {
                id,
                pid,
                serves,
                replaced,
                age_ms,
                code,
                socket,
            } => format!(
                "up {id} {pid} {} {} {age_ms} {code} {socket}\n",
                serves.encode(),
                replaced.as_deref().unwrap_or("-")
            ),
            Control::Down { id } => format!("down {id}\n"),
            Control::ReopenLogs => "reopen 0\n".into(),
            Control::Health {
                target_workers,
                draining,
            } => format!("health {target_workers} {}\n", u8::from(*draining)),
            Control::Restart { reason, count } => format!("restart {count} {reason}\n"),
            Control::Workers { booting, draining } => format!("workers {booting} {draining}\n"),
            Control::Rss { id, bytes } => format!("rss {id} {bytes}\n"),
        }
    }

    pub fn decode(line: &str) -> Option<Control> {
        let line = line.trim_end();
        let mut parts = line.splitn(4, ' ');
        let kind = parts.next()?;
        let id = parts.next()?.parse().ok()?;
        match kind {
            "up" => decode_up(id, line.splitn(8, ' ').skip(2)),
            "down" => Some(Control::Down { id }),
            "reopen" => Some(Control::ReopenLogs),
            "health" => Some(Control::Health {
                target_workers: id,
                draining: parts.next()? == "1",
            }),
            "restart" => Some(Control::Restart {
                count: id,
                reason: parts.next()?.to_string(),
            }),
            "workers" => Some(Control::Workers {
                booting: id,
                draining: parts.next()?.parse().ok()?,
            }),
            "rss" => Some(Control::Rss {
                id,
                bytes: parts.next()?.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// `up <id> <pid> <serves> <replaced|-> <age ms> <code> <socket>`: the socket path last,
/// since it may hold spaces.
fn decode_up<'a>(id: u64, mut parts: impl Iterator<Item = &'a str>) -> Option<Control> {
    let pid = parts.next()?.parse().ok()?;
    let serves = Serves::decode(parts.next()?)?;
    let replaced = Some(parts.next()?).filter(|r| *r != "-").map(String::from);
    let age_ms = parts.next()?.parse().ok()?;
    let code = parts.next()?.parse().ok()?;
    let socket = parts.next()?.to_string();
    Some(Control::Up {
        id,
        pid,
        serves,
        replaced,
        age_ms,
        code,
        socket,
    })
}

/// The signal that asks a worker for its Python stacks (`corral dump`,
/// `worker/stack_dump.rs`): a real-time one, which nothing else sends
/// (SIGUSR2 is the timeout dump to the error log; SIGWINCH reaches every
/// process of a terminal's group).
pub fn dump_signal() -> i32 {
    libc::SIGRTMIN() + 2
}

/// Writes one control line; a full pipe (edge stuck) drops the message
/// rather than blocking the master.
pub fn send_control(pipe: &mut std::fs::File, msg: &Control) -> std::io::Result<()> {
    pipe.write_all(msg.encode().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            Status::Ready(12, None),
            Status::Ready(
                13,
                Some(Serves {
                    interface: Interface::Asgi,
                    capacity: 1000,
                }),
            ),
            Status::Failed(3, "ImportError: x y".into()),
            Status::Queued(17),
        ] {
            assert_eq!(Status::decode(s.encode().trim_end()), Some(s));
        }
        for c in [
            Control::Up {
                id: 7,
                pid: 4321,
                serves: Serves {
                    interface: Interface::Wsgi,
                    capacity: 4,
                },
                replaced: Some("max_requests".into()),
                age_ms: 12_345,
                code: 2,
                socket: "/run/c/w 7.sock".into(),
            },
            Control::Up {
                id: 8,
                pid: 4322,
                serves: Serves {
                    interface: Interface::Asgi,
                    capacity: 100,
                },
                replaced: None,
                age_ms: 0,
                code: 0,
                socket: "/run/c/w8.sock".into(),
            },
            Control::Down { id: 7 },
            Control::ReopenLogs,
            Control::Health {
                target_workers: 4,
                draining: true,
            },
            Control::Health {
                target_workers: 1,
                draining: false,
            },
            Control::Restart {
                reason: "max_rss".into(),
                count: 3,
            },
            Control::Workers {
                booting: 1,
                draining: 2,
            },
            Control::Rss {
                id: 3,
                bytes: 52_000_000,
            },
        ] {
            assert_eq!(Control::decode(&c.encode()), Some(c));
        }
        assert_eq!(Status::decode("bogus 1"), None);
        assert!(Status::Failed(1, "x\ny".repeat(2000)).encode().len() < 1100);
    }
}
