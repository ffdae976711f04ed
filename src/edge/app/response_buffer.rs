//! The buffer between a worker's response and a slower client, so a worker
//! is free as soon as its response is read, whatever the client's speed
//! (nginx's proxy buffering).
//!
//! Up to `[limits] response_buffer` of each response is held in memory, and
//! all responses together hold at most `[limits] buffer_memory`; the rest
//! goes to an unlinked temp file (nginx: `proxy_temp_path`), up to
//! `[limits] max_temp_file` per response. Past that (or when the disk is
//! full) the reader waits for the client, holding the worker, as nginx does.
//! Order is kept: the body is a queue of pieces, in memory or in the file.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Memory is counted in KiB permits (a semaphore holds at most u32 permits).
const UNIT: u64 = 1024;
/// How much of a spooled stretch is read back at once.
const READ_PIECE: u64 = 64 * 1024;

/// The edge-wide memory budget for buffered response bodies.
#[derive(Clone)]
pub struct Budget {
    memory: Arc<Semaphore>,
    per_response: u64,
    max_file: u64,
}

impl Budget {
    pub fn new(total: u64, per_response: u64, max_file: u64) -> Self {
        let units = (total / UNIT).min(u32::MAX as u64 / 2) as usize;
        Budget {
            memory: Arc::new(Semaphore::new(units)),
            per_response,
            max_file,
        }
    }
}

enum Piece {
    Memory(Bytes, Option<OwnedSemaphorePermit>),
    /// `len` bytes of the spool file from `at`.
    Spooled {
        at: u64,
        len: u64,
    },
    /// The body broke off: what came before still goes out, then this.
    Failed(io::Error),
}

#[derive(Default)]
struct State {
    pieces: VecDeque<Piece>,
    in_memory: u64,
    file: Option<Arc<std::fs::File>>,
    file_len: u64,
    /// Spooled bytes the client has not had yet.
    file_unsent: u64,
    ended: bool,
    client_gone: bool,
    /// The body's trailer fields, handed over with its end.
    trailers: Vec<(String, Vec<u8>)>,
    /// What the request cost, once the worker's answer is all in.
    work: Option<crate::edge::app::job::Work>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the client side (data or the end) and the worker side (room).
    changed: Notify,
    budget: Budget,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The worker side: hands pieces in as they are read.
pub struct Writer(Arc<Shared>);
/// The client side: takes pieces out as the client can take them.
pub struct Reader(Arc<Shared>);

pub fn channel(budget: &Budget) -> (Writer, Reader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Notify::new(),
        budget: budget.clone(),
    });
    (Writer(shared.clone()), Reader(shared))
}

/// Where the next piece can go.
enum Room {
    Memory(Option<OwnedSemaphorePermit>),
    File,
    /// Memory and file are both full: wait for the client.
    Wait,
}

impl Writer {
    /// Adds a piece of the body. Returns false once the client is gone (the
    /// worker's response need not be read any further).
    pub async fn push(&self, data: Bytes) -> bool {
        loop {
            // Registered before looking, so a wake-up in between is not lost.
            let notified = self.0.changed.notified();
            let room = {
                let st = self.0.lock();
                if st.client_gone {
                    return false;
                }
                self.room_for(&st, data.len() as u64)
            };
            let placed = match room {
                Room::Memory(permit) => self.put_in_memory(data.clone(), permit),
                Room::File => self.put_in_file(&data).await,
                Room::Wait => false,
            };
            if placed {
                self.0.changed.notify_waiters();
                return true;
            }
            notified.await;
        }
    }

    fn room_for(&self, st: &State, len: u64) -> Room {
        let budget = &self.0.budget;
        // Once spooling, keep spooling until the client has caught up, so
        // pieces never overtake each other.
        if st.file_unsent == 0 && st.in_memory + len <= budget.per_response {
            let units = len.div_ceil(UNIT) as u32;
            if let Ok(p) = budget.memory.clone().try_acquire_many_owned(units) {
                return Room::Memory(Some(p));
            }
        }
        if st.file_len + len <= budget.max_file {
            return Room::File;
        }
        if st.in_memory == 0 && st.file_unsent == 0 {
            // Nothing buffered at all: one piece may always go through.
            return Room::Memory(None);
        }
        Room::Wait
    }

    fn put_in_memory(&self, data: Bytes, permit: Option<OwnedSemaphorePermit>) -> bool {
        let mut st = self.0.lock();
        st.in_memory += data.len() as u64;
        st.pieces.push_back(Piece::Memory(data, permit));
        true
    }

    /// False when the file cannot take it (no temp file, disk full): the
    /// caller then waits for the client instead.
    async fn put_in_file(&self, data: &[u8]) -> bool {
        let (file, at) = {
            let st = self.0.lock();
            (st.file.clone(), st.file_len)
        };
        let file = match file {
            Some(f) => f,
            None => match tokio::task::spawn_blocking(tempfile::tempfile).await {
                Ok(Ok(f)) => {
                    let f = Arc::new(f);
                    self.0.lock().file = Some(f.clone());
                    f
                }
                _ => return self.no_file_room(),
            },
        };
        // Page-cache writes; a full disk falls back to waiting.
        if let Err(e) = file.write_all_at(data, at) {
            tracing::warn!("cannot spool a response body to a temp file: {e}; the worker waits for the client instead");
            return self.no_file_room();
        }
        let mut st = self.0.lock();
        st.file_len += data.len() as u64;
        st.file_unsent += data.len() as u64;
        let len = data.len() as u64;
        match st.pieces.back_mut() {
            Some(Piece::Spooled { at: a, len: l }) if *a + *l == at => *l += len,
            _ => st.pieces.push_back(Piece::Spooled { at, len }),
        }
        true
    }

    /// The file is unusable from now on: cap it where it is.
    fn no_file_room(&self) -> bool {
        let mut st = self.0.lock();
        st.file_len = u64::MAX / 2;
        false
    }

    /// Resolves once the client is gone: a worker quiet for a while
    /// (server-sent events) is let go then, not at its next piece.
    pub async fn client_gone(&self) {
        loop {
            let notified = self.0.changed.notified();
            if self.0.lock().client_gone {
                return;
            }
            notified.await;
        }
    }

    /// The body is complete; `trailers` (mostly none) follow it.
    pub fn end(self, trailers: Vec<(String, Vec<u8>)>, work: crate::edge::app::job::Work) {
        let mut st = self.0.lock();
        st.ended = true;
        st.trailers = trailers;
        st.work = Some(work);
        drop(st);
        self.0.changed.notify_waiters();
    }

    /// The body broke off (worker died, app.timeout).
    pub fn fail(self, e: io::Error) {
        let mut st = self.0.lock();
        st.pieces.push_back(Piece::Failed(e));
        st.ended = true;
        drop(st);
        self.0.changed.notify_waiters();
    }
}

impl Reader {
    /// The next piece for the client; `None` at the end of the body.
    pub async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            let notified = self.0.changed.notified();
            if let Some(out) = self.take() {
                self.0.changed.notify_waiters();
                return Some(out);
            }
            if self.0.lock().ended {
                return None;
            }
            notified.await;
        }
    }

    /// The trailer fields, once `next` has returned `None`.
    pub fn take_trailers(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.0.lock().trailers)
    }

    /// What the request cost, once `next` has returned `None`.
    pub fn take_work(&mut self) -> Option<crate::edge::app::job::Work> {
        self.0.lock().work.take()
    }

    fn take(&self) -> Option<io::Result<Bytes>> {
        let mut st = self.0.lock();
        match st.pieces.pop_front()? {
            Piece::Memory(data, permit) => {
                st.in_memory -= data.len() as u64;
                drop(permit);
                Some(Ok(data))
            }
            Piece::Failed(e) => Some(Err(e)),
            Piece::Spooled { at, len } => {
                let n = len.min(READ_PIECE);
                if len > n {
                    st.pieces.push_front(Piece::Spooled {
                        at: at + n,
                        len: len - n,
                    });
                }
                st.file_unsent -= n;
                let file = st.file.clone()?;
                drop(st);
                let mut buf = Vec::with_capacity(n as usize);
                Some(
                    crate::edge::files::read::pread_into(&file, &mut buf, at)
                        .map(|()| Bytes::from(buf)),
                )
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.lock().client_gone = true;
        self.0.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(mut r: Reader) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(piece) = r.next().await {
            out.extend_from_slice(&piece.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn memory_then_file_keeps_order_and_frees_the_budget() {
        let budget = Budget::new(256 * 1024, 64 * 1024, 1 << 30);
        let (w, r) = channel(&budget);
        let mut want = Vec::new();
        for i in 0..200u32 {
            let piece = Bytes::from(vec![(i % 251) as u8; 1000 + i as usize]);
            want.extend_from_slice(&piece);
            assert!(
                w.push(piece).await,
                "nothing waits: the file takes the rest"
            );
        }
        assert!(w.0.lock().file_len > 0, "past 64 KiB the body is spooled");
        w.end(Vec::new(), Default::default());
        assert_eq!(drain(r).await, want);
        assert_eq!(budget.memory.available_permits(), 256);
    }

    #[tokio::test]
    async fn a_full_file_makes_the_writer_wait_for_the_client() {
        let budget = Budget::new(1 << 20, 4096, 8192);
        let (w, r) = channel(&budget);
        let writer = tokio::spawn(async move {
            for _ in 0..10 {
                assert!(w.push(Bytes::from(vec![7u8; 4096])).await);
            }
            w.end(Vec::new(), Default::default());
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !writer.is_finished(),
            "12 KiB of room for 40 KiB: the writer waits"
        );
        assert_eq!(drain(r).await.len(), 40960);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_gone_client_stops_the_writer() {
        let budget = Budget::new(1 << 20, 4096, 4096);
        let (w, r) = channel(&budget);
        assert!(w.push(Bytes::from(vec![1u8; 4096])).await);
        drop(r);
        assert!(!w.push(Bytes::from(vec![1u8; 10])).await);
        w.client_gone().await;
    }
}
