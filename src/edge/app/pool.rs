//! Choosing a worker for a request: least outstanding requests among the
//! workers that are up, and a bounded FIFO queue when all are busy.
//!
//! Invariants: a worker's `busy` counts the leases out on it and never
//! exceeds `capacity` (1 for a sync worker, so it never gets a second
//! request while one runs). A released lease goes straight to the oldest
//! waiter, which keeps the queue strictly first-in, first-out. Leases
//! release on drop, so every error path gives the worker back.

use crate::edge::app::peer::{Peer, Stream};
use crate::edge::metrics::Metrics;
use crate::ipc::{Interface, Serves};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tokio::sync::oneshot;

/// Idle connections kept per worker for reuse: at least this many, and up
/// to 64 for a worker that takes many requests at once (ASGI), which would
/// otherwise connect anew for most of them.
const MIN_IDLE_CONNS: usize = 4;
const MAX_IDLE_CONNS: usize = 64;

pub type Conn = BufReader<Stream>;

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `queue_size` requests are already waiting.
    QueueFull,
    /// Waited `queue_timeout` without a worker coming free.
    Timeout,
    /// Every ASGI worker's WebSocket share is taken (WebSockets never
    /// queue: they would wait in line before HTTP requests).
    NoRoomForSocket,
}

/// How many of a worker's `capacity` slots WebSockets may hold: all but a
/// tenth (at least one), kept for HTTP so idle sockets cannot starve it.
fn socket_share(capacity: usize) -> usize {
    capacity - (capacity / 10).max(1).min(capacity)
}

struct Worker {
    id: u64,
    peer: Peer,
    busy: usize,
    capacity: usize,
    /// Of `busy`, the slots held by open WebSockets.
    sockets: usize,
    interface: Interface,
    idle: Vec<Conn>,
}

struct Waiter {
    ticket: u64,
    tx: oneshot::Sender<Lease>,
}

struct Inner {
    workers: Vec<Worker>,
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
}

pub struct Pool {
    inner: Mutex<Inner>,
    queue_size: usize,
    queue_timeout: Duration,
    /// Queue waits and time in the worker, timed here where leases begin
    /// and end.
    metrics: Arc<Metrics>,
}

/// Requests waiting for a worker, and the workers taking requests: idle
/// (none in hand) or busy (at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub queued: usize,
    pub idle: usize,
    pub busy: usize,
}

/// The right to send one request to one worker.
pub struct Lease {
    pool: Arc<Pool>,
    pub worker: u64,
    pub peer: Peer,
    pub interface: Interface,
    /// Held by a WebSocket (counted in its worker's `sockets`).
    socket: bool,
    live: bool,
    /// When the worker took the request.
    taken: Instant,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.live {
            self.live = false;
            if !self.socket {
                self.pool.metrics.worked(self.taken.elapsed(), self.worker);
            }
            self.pool.release(self.worker, self.socket);
        }
    }
}

impl Lease {
    /// An idle pooled connection to this worker, if any.
    pub fn take_conn(&self) -> Option<Conn> {
        let mut inner = self.pool.lock();
        inner
            .workers
            .iter_mut()
            .find(|w| w.id == self.worker)?
            .idle
            .pop()
    }

    /// Returns a connection that finished a response cleanly.
    pub fn put_conn(&self, conn: Conn) {
        let mut inner = self.pool.lock();
        if let Some(w) = inner.workers.iter_mut().find(|w| w.id == self.worker) {
            if w.idle.len() < w.capacity.clamp(MIN_IDLE_CONNS, MAX_IDLE_CONNS) {
                w.idle.push(conn);
            }
        }
    }
}

impl Pool {
    pub fn new(queue_size: usize, queue_timeout: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Pool {
            inner: Mutex::new(Inner {
                workers: Vec::new(),
                waiters: VecDeque::new(),
                next_ticket: 0,
            }),
            queue_size,
            queue_timeout,
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (FIFO, bounded) for a worker. `avoid` lists workers that just
    /// failed this request; they are skipped when another one is free.
    pub async fn acquire(self: &Arc<Self>, avoid: &[u64]) -> Result<Lease, Refused> {
        let asked = Instant::now();
        let lease = self.wait_for_worker(avoid).await;
        if lease.is_ok() {
            self.metrics.waited(asked.elapsed());
        }
        lease
    }

    async fn wait_for_worker(self: &Arc<Self>, avoid: &[u64]) -> Result<Lease, Refused> {
        let (ticket, rx) = {
            let mut inner = self.lock();
            if inner.waiters.is_empty() {
                let pick = inner
                    .workers
                    .iter_mut()
                    .filter(|w| w.busy < w.capacity && !avoid.contains(&w.id))
                    .min_by_key(|w| w.busy);
                if let Some(w) = pick {
                    w.busy += 1;
                    return Ok(self.lease(w.id, w.peer.clone(), w.interface));
                }
            }
            if inner.waiters.len() >= self.queue_size {
                return Err(Refused::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            let ticket = inner.next_ticket;
            inner.next_ticket += 1;
            inner.waiters.push_back(Waiter { ticket, tx });
            (ticket, rx)
        };
        match tokio::time::timeout(self.queue_timeout, rx).await {
            Ok(Ok(lease)) => Ok(lease),
            _ => {
                let mut inner = self.lock();
                inner.waiters.retain(|w| w.ticket != ticket);
                Err(Refused::Timeout)
            }
        }
    }

    fn lease(self: &Arc<Self>, worker: u64, peer: Peer, interface: Interface) -> Lease {
        Lease {
            pool: self.clone(),
            worker,
            peer,
            interface,
            socket: false,
            live: true,
            taken: Instant::now(),
        }
    }

    /// A slot for a WebSocket on an ASGI worker, now or never: the least
    /// busy one whose WebSocket share is not taken.
    pub fn acquire_socket(self: &Arc<Self>, avoid: &[u64]) -> Result<Lease, Refused> {
        let mut inner = self.lock();
        let pick = inner
            .workers
            .iter_mut()
            .filter(|w| w.interface == Interface::Asgi && !avoid.contains(&w.id))
            .filter(|w| w.busy < w.capacity && w.sockets < socket_share(w.capacity))
            .min_by_key(|w| w.busy);
        let Some(w) = pick else {
            return Err(Refused::NoRoomForSocket);
        };
        w.busy += 1;
        w.sockets += 1;
        let mut lease = self.lease(w.id, w.peer.clone(), w.interface);
        lease.socket = true;
        Ok(lease)
    }

    /// Gives a worker slot back: to the oldest live waiter, or to the pool.
    fn release(self: &Arc<Self>, worker: u64, socket: bool) {
        let mut inner = self.lock();
        let Some(pos) = inner.workers.iter().position(|w| w.id == worker) else {
            return; // the worker went down meanwhile
        };
        if socket {
            inner.workers[pos].sockets = inner.workers[pos].sockets.saturating_sub(1);
        }
        let peer = inner.workers[pos].peer.clone();
        let interface = inner.workers[pos].interface;
        while let Some(waiter) = inner.waiters.pop_front() {
            match waiter.tx.send(self.lease(worker, peer.clone(), interface)) {
                Ok(()) => return,
                Err(mut lease) => lease.live = false, // waiter timed out; try the next
            }
        }
        inner.workers[pos].busy = inner.workers[pos].busy.saturating_sub(1);
    }

    /// A worker is ready: add it and let it serve waiting requests at once.
    pub fn worker_up(self: &Arc<Self>, id: u64, peer: Peer, serves: Serves) {
        let mut inner = self.lock();
        if inner.workers.iter().any(|w| w.id == id) {
            return;
        }
        let mut busy = 0;
        while busy < serves.capacity {
            let Some(waiter) = inner.waiters.pop_front() else {
                break;
            };
            match waiter
                .tx
                .send(self.lease(id, peer.clone(), serves.interface))
            {
                Ok(()) => busy += 1,
                Err(mut lease) => lease.live = false,
            }
        }
        inner.workers.push(Worker {
            id,
            peer,
            busy,
            sockets: 0,
            capacity: serves.capacity.max(1),
            interface: serves.interface,
            idle: Vec::new(),
        });
    }

    /// Workers are up and none of them serves ASGI: a WebSocket has
    /// nowhere to go (while none is up, it gets the usual 503).
    pub fn only_wsgi(&self) -> bool {
        let inner = self.lock();
        !inner.workers.is_empty() && inner.workers.iter().all(|w| w.interface == Interface::Wsgi)
    }

    /// The pool right now, for the health path, the metrics and the
    /// master's status line.
    pub fn census(&self) -> Census {
        let inner = self.lock();
        let busy = inner.workers.iter().filter(|w| w.busy > 0).count();
        Census {
            queued: inner.waiters.len(),
            idle: inner.workers.len() - busy,
            busy,
        }
    }

    /// A worker is dying or draining: no new requests; in-flight ones finish.
    pub fn worker_down(&self, id: u64) {
        self.lock().workers.retain(|w| w.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNC: Serves = Serves {
        interface: Interface::Wsgi,
        capacity: 1,
    };

    #[test]
    fn websockets_leave_a_tenth_of_each_worker_to_http() {
        rt().block_on(async {
            let pool = Pool::new(10, Duration::from_millis(50), Default::default());
            let asgi = Serves {
                interface: Interface::Asgi,
                capacity: 20,
            };
            pool.worker_up(1, Peer::Unix("a".into()), asgi);
            let sockets: Vec<Lease> = (0..18).map(|_| pool.acquire_socket(&[]).unwrap()).collect();
            assert_eq!(
                pool.acquire_socket(&[]).err(),
                Some(Refused::NoRoomForSocket)
            );
            let http: Vec<Lease> = vec![
                pool.acquire(&[]).await.unwrap(),
                pool.acquire(&[]).await.unwrap(),
            ];
            drop(sockets);
            // Freed WebSocket slots count for WebSockets again.
            assert!(pool.acquire_socket(&[]).is_ok());
            drop(http);
            // A WSGI worker takes no WebSockets at all.
            let wsgi = Pool::new(10, Duration::from_millis(50), Default::default());
            wsgi.worker_up(2, Peer::Unix("b".into()), SYNC);
            assert_eq!(
                wsgi.acquire_socket(&[]).err(),
                Some(Refused::NoRoomForSocket)
            );
            assert_eq!(
                (socket_share(1), socket_share(5), socket_share(1000)),
                (0, 4, 900)
            );
        });
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn least_busy_and_one_at_a_time() {
        rt().block_on(async {
            let pool = Pool::new(10, Duration::from_millis(50), Default::default());
            pool.worker_up(1, Peer::Unix("a".into()), SYNC);
            pool.worker_up(2, Peer::Unix("b".into()), SYNC);
            let a = pool.acquire(&[]).await.unwrap();
            let b = pool.acquire(&[]).await.unwrap();
            assert_ne!(a.worker, b.worker);
            assert_eq!(pool.acquire(&[]).await.err(), Some(Refused::Timeout));
            drop(a);
            assert!(pool.acquire(&[]).await.is_ok());
        });
    }

    #[test]
    fn queue_is_fifo_and_bounded() {
        rt().block_on(async {
            let pool = Pool::new(2, Duration::from_secs(5), Default::default());
            pool.worker_up(1, Peer::Unix("a".into()), SYNC);
            let first = pool.acquire(&[]).await.unwrap();
            let p1 = pool.clone();
            let w1 = tokio::spawn(async move { p1.acquire(&[]).await.map(|l| (1, l)) });
            tokio::task::yield_now().await;
            let p2 = pool.clone();
            let w2 = tokio::spawn(async move { p2.acquire(&[]).await.map(|l| (2, l)) });
            tokio::task::yield_now().await;
            assert_eq!(pool.acquire(&[]).await.err(), Some(Refused::QueueFull));
            drop(first);
            let (n, lease) = w1.await.unwrap().unwrap();
            assert_eq!(n, 1);
            drop(lease);
            assert_eq!(w2.await.unwrap().unwrap().0, 2);
        });
    }

    #[test]
    fn a_new_worker_serves_the_queue() {
        rt().block_on(async {
            let pool = Pool::new(2, Duration::from_secs(5), Default::default());
            let p = pool.clone();
            let waiting = tokio::spawn(async move { p.acquire(&[]).await.map(|l| l.worker) });
            tokio::task::yield_now().await;
            pool.worker_up(7, Peer::Unix("w".into()), SYNC);
            assert_eq!(waiting.await.unwrap(), Ok(7));
        });
    }
}
