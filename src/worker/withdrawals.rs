//! The worker's side of taking back a request sent ahead
//! (`wire::withdraw`): which request each link has started, and the thread
//! that answers the edge's cancels while the Python thread is busy.
//!
//! One lock per link decides between the two threads: the serving thread
//! takes it to start the n-th request, the cancel thread to withdraw it.
//! Whichever comes first wins, so a request runs once or not at all.

use crate::wire::withdraw::{self, RUNNING, WITHDRAWN};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, error};

#[derive(Default)]
struct Turns {
    /// The last request started on the link (1-based).
    started: u64,
    /// A request the edge took back before it started.
    withdrawn: Option<u64>,
    /// When the link closed. Kept a while after, so that a late cancel
    /// for a request that ran is not taken for one on a link not yet read.
    closed: Option<Instant>,
}

/// How long a closed link is remembered: far longer than a cancel can take
/// to come (the edge gives up on one after a second).
const REMEMBER_CLOSED: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Withdrawals {
    links: Mutex<HashMap<u64, Arc<Mutex<Turns>>>>,
}

/// One link's turns, as its serving thread holds them; marked closed on
/// drop.
pub struct LinkTurns {
    turns: Arc<Mutex<Turns>>,
    all: Arc<Withdrawals>,
}

impl LinkTurns {
    /// Whether the `nth` request on this link may start (false: the edge
    /// took it back, skip it).
    pub fn begin(&self, nth: u64) -> bool {
        let mut t = lock(&self.turns);
        if t.withdrawn == Some(nth) {
            return false;
        }
        t.started = nth;
        true
    }
}

impl Drop for LinkTurns {
    fn drop(&mut self) {
        let now = Instant::now();
        lock(&self.turns).closed = Some(now);
        lock(&self.all.links).retain(|_, t| {
            lock(t)
                .closed
                .is_none_or(|at| now.duration_since(at) < REMEMBER_CLOSED)
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Withdrawals {
    /// A link named itself. A cancel may have come first (its first
    /// request taken back before this thread read the link): then its
    /// entry is already there.
    pub fn register(self: &Arc<Self>, id: u64) -> LinkTurns {
        let turns = lock(&self.links).entry(id).or_default().clone();
        LinkTurns {
            turns,
            all: self.clone(),
        }
    }

    /// Decides a cancel for the `nth` request on link `id`.
    pub(super) fn cancel(&self, id: u64, nth: u64) -> &'static [u8] {
        let turns = {
            let mut links = lock(&self.links);
            match links.get(&id) {
                Some(t) => t.clone(),
                // Unknown: a link this thread has not read yet, whose
                // first request can be taken back before it is read. A
                // later request on an unknown link ran on a link since
                // closed and forgotten.
                None if nth == 1 => links.entry(id).or_default().clone(),
                None => return RUNNING,
            }
        };
        let mut t = lock(&turns);
        if t.started >= nth || t.closed.is_some() {
            return RUNNING;
        }
        t.withdrawn = Some(nth);
        WITHDRAWN
    }
}

/// Listens on the control socket beside `socket` and answers cancels on
/// a thread of its own.
pub fn listen(socket: &Path) -> io::Result<Arc<Withdrawals>> {
    let path = withdraw::control_path(socket);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let all = Arc::new(Withdrawals::default());
    let shared = all.clone();
    std::thread::Builder::new()
        .name("withdraw".into())
        .spawn(move || serve(&listener, &shared))?;
    Ok(all)
}

fn serve(listener: &UnixListener, all: &Withdrawals) {
    for conn in listener.incoming() {
        match conn {
            Ok(conn) => {
                if let Err(e) = answer(conn, all) {
                    debug!("a cancel from the edge failed: {e}");
                }
            }
            Err(e) => {
                error!("the worker's control socket failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One cancel line in, one answer out. The edge writes it whole at once;
/// the timeout only guards against a broken peer.
fn answer(conn: UnixStream, all: &Withdrawals) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut line = Vec::with_capacity(withdraw::MAX_LINE);
    BufReader::new(&conn)
        .take(withdraw::MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    let Some((id, nth)) = withdraw::parse_cancel(&line) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a bad cancel line",
        ));
    };
    (&conn).write_all(all.cancel(id, nth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_runs_once_or_not_at_all() {
        let all = Arc::new(Withdrawals::default());
        let link = all.register(5);
        assert!(link.begin(1));
        assert_eq!(all.cancel(5, 1), RUNNING, "already started");
        assert_eq!(all.cancel(5, 2), WITHDRAWN);
        assert!(!link.begin(2), "taken back before it started");
        assert!(link.begin(3));
        // A link not read yet: its first request can be taken back.
        assert_eq!(all.cancel(9, 1), WITHDRAWN);
        assert!(!all.register(9).begin(1));
        assert_eq!(all.cancel(10, 2), RUNNING, "unknown and not new: closed");
        // A closed link's requests all ran, whatever comes late.
        drop(link);
        assert_eq!(all.cancel(5, 4), RUNNING);
    }

    #[test]
    fn the_control_socket_answers_cancels() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("w1.sock");
        let all = listen(&socket).unwrap();
        let link = all.register(3);
        assert!(link.begin(1));
        let ask = |nth| {
            let mut c = UnixStream::connect(withdraw::control_path(&socket)).unwrap();
            c.write_all(&withdraw::cancel_line(3, nth)).unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            got
        };
        assert_eq!(ask(1), RUNNING);
        assert_eq!(ask(2), WITHDRAWN);
        assert!(!link.begin(2));
    }
}
