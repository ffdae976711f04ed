//! The edge's threads: one single-threaded runtime each (pingora's no-steal
//! mode, `edge/mod.rs`), and which of them a new connection lives on.
//!
//! A connection stays on one thread for its whole life, as in nginx's
//! worker processes: its h2 streams, WebSocket and pooled worker links
//! never wake another thread. Every thread accepts; but a burst of new
//! connections all lands on the thread that wakes first (it drains the
//! backlog before the other is scheduled), and long-lived ones (WebSockets,
//! a load balancer's keep-alive pool) would then share one core for hours.
//! So each connection goes to the thread with the fewest open, moved there
//! when another thread accepted it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tracing::debug;

pub struct EdgeThreads {
    threads: Vec<Thread>,
}

struct Thread {
    handle: Handle,
    /// Connections living on it.
    open: AtomicUsize,
}

impl EdgeThreads {
    /// A handle on each runtime. pingora hands them out only at random,
    /// so ask until each thread has answered.
    pub async fn find(wanted: usize) -> Arc<Self> {
        let mut found: Vec<(ThreadId, Handle)> = Vec::new();
        for _ in 0..wanted.max(1) * 64 {
            let handle = pingora_runtime::current_handle();
            let Ok(id) = handle.spawn(async { std::thread::current().id() }).await else {
                continue;
            };
            if !found.iter().any(|(t, _)| *t == id) {
                found.push((id, handle));
                if found.len() >= wanted {
                    break;
                }
            }
        }
        Arc::new(Self::of(found.into_iter().map(|(_, h)| h).collect()))
    }

    fn of(handles: Vec<Handle>) -> Self {
        let threads = handles
            .into_iter()
            .map(|handle| Thread {
                handle,
                open: AtomicUsize::new(0),
            })
            .collect();
        EdgeThreads { threads }
    }

    /// Each thread's index and runtime.
    pub fn handles(&self) -> impl Iterator<Item = (usize, &Handle)> {
        self.threads.iter().map(|t| &t.handle).enumerate()
    }

    /// Where a connection accepted on thread `here` should live, counted
    /// there until the result is dropped: the thread with the fewest open,
    /// `here` on a tie (no move).
    pub fn place(self: &Arc<Self>, here: usize) -> Placed {
        let open = |i: usize| self.threads[i].open.load(Ordering::Relaxed);
        let mut there = here.min(self.threads.len().saturating_sub(1));
        for i in 0..self.threads.len() {
            if open(i) < open(there) {
                there = i;
            }
        }
        self.threads[there].open.fetch_add(1, Ordering::Relaxed);
        Placed {
            threads: self.clone(),
            index: there,
            moved: there != here,
        }
    }
}

/// A connection's place on a thread, counted until dropped.
pub struct Placed {
    threads: Arc<EdgeThreads>,
    index: usize,
    /// Accepted on another thread.
    moved: bool,
}

impl Placed {
    #[cfg(test)]
    fn index(&self) -> usize {
        self.index
    }

    /// Serves the accepted `tcp` on the placed thread, holding this place
    /// meanwhile. A socket moved from another thread is registered again
    /// with its new thread's runtime.
    pub fn serve<F, Fut>(self, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = self.threads.threads[self.index].handle.clone();
        if !self.moved {
            // Built here, so the task holds the future and not `serve` too.
            let serving = serve(tcp);
            handle.spawn(async move {
                let _placed = self;
                serving.await;
            });
            return;
        }
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => return debug!("moving a connection: {e}"),
        };
        handle.spawn(async move {
            let _placed = self;
            match TcpStream::from_std(tcp) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => debug!("moving a connection: {e}"),
            }
        });
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.threads.threads[self.index]
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_to_the_thread_with_the_fewest_open() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handles = vec![rt.handle().clone(), rt.handle().clone()];
        let threads = Arc::new(EdgeThreads::of(handles));
        // A tie stays where it was accepted.
        let a = threads.place(1);
        assert_eq!(a.index(), 1);
        // Then the other thread, whichever accepted it.
        let b = threads.place(1);
        assert_eq!(b.index(), 0);
        let c = threads.place(0);
        assert_eq!(c.index(), 0);
        let d = threads.place(0);
        assert_eq!(d.index(), 1);
        // A closed connection frees its place.
        drop((a, d));
        assert_eq!(threads.place(0).index(), 1);
    }
}
