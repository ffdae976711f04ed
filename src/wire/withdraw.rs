//! Taking back a request sent ahead to a busy worker.
//!
//! The edge may write a single-threaded worker its next request while the
//! current one runs (`edge/app/pool.rs`, "Ahead"), so the worker goes from
//! one to the next without sleeping. If another worker comes free first,
//! the edge asks for that request back. The worker's one Python thread is
//! busy, so a second thread that sleeps on the worker's *control socket*
//! (beside its socket, [`control_path`]) answers, and only ever wakes for
//! this.
//!
//! The edge names each connection once, with a first line
//! `~link <id>\r\n`, and counts the requests it writes on it. To take back
//! the n-th: `~cancel <id> <n>\r\n` on the control socket; the answer is
//! [`WITHDRAWN`] (the worker will skip it unrun: send it elsewhere) or
//! [`RUNNING`] (too late: its answer comes as usual). The worker decides
//! under one lock with the thread that starts requests, so a request runs
//! once or not at all, and the edge learns which.
//!
//! None of these lines can be mistaken for HTTP: a request starts with a
//! method token.

use std::path::{Path, PathBuf};

/// The worker's answer: the request will not run.
pub const WITHDRAWN: &[u8] = b"~withdrawn\r\n";
/// The worker's answer: the request has started (or ended).
pub const RUNNING: &[u8] = b"~running\r\n";
/// Longest line of this protocol.
pub const MAX_LINE: usize = 64;

const LINK: &str = "~link ";
const CANCEL: &str = "~cancel ";

/// Where a worker listening on `socket` takes cancels.
pub fn control_path(socket: &Path) -> PathBuf {
    socket.with_extension("ctl")
}

pub fn link_line(id: u64) -> Vec<u8> {
    format!("{LINK}{id}\r\n").into_bytes()
}

/// Whether `buf` begins with a link line, complete or not.
pub fn starts_link(buf: &[u8]) -> bool {
    let n = buf.len().min(LINK.len());
    buf[..n] == LINK.as_bytes()[..n]
}

/// The id in a whole link line.
pub fn parse_link(line: &[u8]) -> Option<u64> {
    let rest = std::str::from_utf8(line).ok()?.strip_prefix(LINK)?;
    rest.strip_suffix("\r\n")?.parse().ok()
}

/// Asks for the `nth` request (1-based) written on link `id`.
pub fn cancel_line(id: u64, nth: u64) -> Vec<u8> {
    format!("{CANCEL}{id} {nth}\r\n").into_bytes()
}

pub fn parse_cancel(line: &[u8]) -> Option<(u64, u64)> {
    let rest = std::str::from_utf8(line).ok()?.strip_prefix(CANCEL)?;
    let (id, nth) = rest.strip_suffix("\r\n")?.split_once(' ')?;
    Some((id.parse().ok()?, nth.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_link(&link_line(7)), Some(7));
        assert_eq!(parse_cancel(&cancel_line(7, 3)), Some((7, 3)));
        assert_eq!(parse_cancel(b"~cancel 7\r\n"), None);
        assert_eq!(parse_link(b"~link x\r\n"), None);
        assert!(starts_link(b"~li"));
        assert!(starts_link(&link_line(1)));
        assert!(!starts_link(b"GET / HTTP/1.1\r\n"));
        assert!(cancel_line(u64::MAX, u64::MAX).len() <= MAX_LINE);
        assert_eq!(
            control_path(Path::new("/run/corral/w3.sock")),
            Path::new("/run/corral/w3.ctl")
        );
    }
}
