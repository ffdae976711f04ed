//! Choosing a worker for a request: least outstanding requests among the
//! workers that are up, and a bounded FIFO queue when all are busy.
//!
//! Invariants: a worker's `busy` counts the leases out on it and never
//! exceeds `capacity` (1 for a sync worker, so it never gets a second
//! request while one runs). A released lease goes straight to the oldest
//! waiter, which keeps the queue strictly first-in, first-out. Leases
//! release on drop, so every error path gives the worker back.
//!
//! Each lease also records its request (a `Job`) while it is out, so
//! `corral status` and `corral dump` can say what every worker is running.

use crate::edge::app::job::{Job, Work};
use crate::edge::app::peer::{Peer, Stream};
use crate::edge::metrics::Metrics;
use crate::ipc::Interface;
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

/// What the master says of a worker, beyond where to reach it.
#[derive(Debug, Clone)]
pub struct Facts {
    pub pid: i32,
    /// Why the worker it took over from was replaced.
    pub replaced: Option<String>,
    pub interface: Interface,
    pub capacity: usize,
    /// When it was started (from the age the master gives).
    pub up_at: Instant,
    /// Where it writes its Python stacks when asked (`corral dump`).
    pub stacks: std::path::PathBuf,
}

struct Worker {
    id: u64,
    facts: Facts,
    peer: Peer,
    busy: usize,
    /// Of `busy`, the slots held by open WebSockets.
    sockets: usize,
    idle: Vec<Conn>,
}

impl Worker {
    fn capacity(&self) -> usize {
        self.facts.capacity
    }

    fn interface(&self) -> Interface {
        self.facts.interface
    }
}

struct Waiter {
    ticket: u64,
    tx: oneshot::Sender<Lease>,
    job: Job,
}

/// A request a worker has taken and not finished.
struct Running {
    worker: u64,
    job: Job,
    since: Instant,
}

struct Inner {
    workers: Vec<Worker>,
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
    /// Keyed by the lease's `slot`.
    running: slab::Slab<Running>,
    /// Workers taken out of service (draining, timed out) while they still
    /// ran requests: kept for the status report until those end.
    leaving: Vec<(u64, Facts)>,
}

impl Inner {
    fn start(&mut self, worker: u64, job: Job) -> usize {
        let since = Instant::now();
        self.running.insert(Running { worker, job, since })
    }
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

/// Where and when a request began in a worker (see `Lease::begun`).
#[derive(Clone, Copy, Debug)]
pub struct Begun {
    queue: Duration,
    taken: Instant,
    worker: i32,
}

impl Begun {
    /// What it cost until now, without the worker's receipt.
    pub fn work(&self) -> Work {
        Work {
            queue: self.queue,
            app: self.taken.elapsed(),
            worker: self.worker,
            receipt: None,
        }
    }
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
    /// Its entry in the pool's `running`.
    slot: usize,
    /// When the worker took the request.
    taken: Instant,
    /// How long the request waited for it.
    waited: Duration,
    /// The worker's pid, for the access log.
    pid: i32,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.live {
            self.live = false;
            if !self.socket {
                self.pool.metrics.worked(self.taken.elapsed(), self.worker);
            }
            self.pool.release(self.worker, self.socket, self.slot);
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

    /// What the request cost so far: its queue wait and its time in the
    /// worker until now.
    pub fn work(&self, receipt: Option<crate::wire::receipt::Receipt>) -> Work {
        Work {
            receipt,
            ..self.begun().work()
        }
    }

    /// The request's start on its worker, for a `Work` written later (the
    /// lease may be gone by then: a timeout, a client that left).
    pub fn begun(&self) -> Begun {
        Begun {
            queue: self.waited,
            taken: self.taken,
            worker: self.pid,
        }
    }

    /// Returns a connection that finished a response cleanly.
    pub fn put_conn(&self, conn: Conn) {
        let mut inner = self.pool.lock();
        if let Some(w) = inner.workers.iter_mut().find(|w| w.id == self.worker) {
            if w.idle.len() < w.capacity().clamp(MIN_IDLE_CONNS, MAX_IDLE_CONNS) {
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
                running: slab::Slab::new(),
                leaving: Vec::new(),
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
    pub async fn acquire(self: &Arc<Self>, avoid: &[u64], job: &Job) -> Result<Lease, Refused> {
        let asked = Instant::now();
        let mut lease = self.wait_for_worker(avoid, job).await;
        if let Ok(lease) = &mut lease {
            lease.waited = asked.elapsed();
            self.metrics.waited(lease.waited);
        }
        lease
    }

    async fn wait_for_worker(self: &Arc<Self>, avoid: &[u64], job: &Job) -> Result<Lease, Refused> {
        let (ticket, rx) = {
            let mut inner = self.lock();
            if inner.waiters.is_empty() {
                let pick = inner
                    .workers
                    .iter_mut()
                    .filter(|w| w.busy < w.capacity() && !avoid.contains(&w.id))
                    .min_by_key(|w| w.busy);
                if let Some(w) = pick {
                    w.busy += 1;
                    let (id, peer, interface, pid) =
                        (w.id, w.peer.clone(), w.interface(), w.facts.pid);
                    let slot = inner.start(id, job.clone());
                    return Ok(self.lease(id, peer, interface, slot, pid));
                }
            }
            if inner.waiters.len() >= self.queue_size {
                return Err(Refused::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            let ticket = inner.next_ticket;
            inner.next_ticket += 1;
            inner.waiters.push_back(Waiter {
                ticket,
                tx,
                job: job.clone(),
            });
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

    fn lease(
        self: &Arc<Self>,
        worker: u64,
        peer: Peer,
        interface: Interface,
        slot: usize,
        pid: i32,
    ) -> Lease {
        Lease {
            pool: self.clone(),
            worker,
            peer,
            interface,
            socket: false,
            live: true,
            slot,
            taken: Instant::now(),
            waited: Duration::ZERO,
            pid,
        }
    }

    /// A slot for a WebSocket on an ASGI worker, now or never: the least
    /// busy one whose WebSocket share is not taken.
    pub fn acquire_socket(self: &Arc<Self>, avoid: &[u64], job: &Job) -> Result<Lease, Refused> {
        let mut inner = self.lock();
        let pick = inner
            .workers
            .iter_mut()
            .filter(|w| w.interface() == Interface::Asgi && !avoid.contains(&w.id))
            .filter(|w| w.busy < w.capacity() && w.sockets < socket_share(w.capacity()))
            .min_by_key(|w| w.busy);
        let Some(w) = pick else {
            return Err(Refused::NoRoomForSocket);
        };
        w.busy += 1;
        w.sockets += 1;
        let (id, peer, interface, pid) = (w.id, w.peer.clone(), w.interface(), w.facts.pid);
        let slot = inner.start(id, job.clone());
        let mut lease = self.lease(id, peer, interface, slot, pid);
        lease.socket = true;
        Ok(lease)
    }

    /// Gives a worker slot back: to the oldest live waiter, or to the pool.
    fn release(self: &Arc<Self>, worker: u64, socket: bool, slot: usize) {
        let mut inner = self.lock();
        inner.running.try_remove(slot);
        let Some(pos) = inner.workers.iter().position(|w| w.id == worker) else {
            return; // the worker went down meanwhile
        };
        if socket {
            inner.workers[pos].sockets = inner.workers[pos].sockets.saturating_sub(1);
        }
        let peer = inner.workers[pos].peer.clone();
        let interface = inner.workers[pos].interface();
        let pid = inner.workers[pos].facts.pid;
        while let Some(waiter) = inner.waiters.pop_front() {
            let slot = inner.start(worker, waiter.job);
            match waiter
                .tx
                .send(self.lease(worker, peer.clone(), interface, slot, pid))
            {
                Ok(()) => return,
                Err(lease) => inner.unlease(lease), // waiter timed out; try the next
            }
        }
        inner.workers[pos].busy = inner.workers[pos].busy.saturating_sub(1);
    }

    /// A worker is ready: add it and let it serve waiting requests at once.
    pub fn worker_up(self: &Arc<Self>, id: u64, peer: Peer, mut facts: Facts) {
        facts.capacity = facts.capacity.max(1);
        let mut inner = self.lock();
        if inner.workers.iter().any(|w| w.id == id) {
            return;
        }
        inner.leaving.retain(|(w, _)| *w != id);
        let mut busy = 0;
        while busy < facts.capacity {
            let Some(waiter) = inner.waiters.pop_front() else {
                break;
            };
            let slot = inner.start(id, waiter.job);
            match waiter
                .tx
                .send(self.lease(id, peer.clone(), facts.interface, slot, facts.pid))
            {
                Ok(()) => busy += 1,
                Err(lease) => inner.unlease(lease),
            }
        }
        inner.workers.push(Worker {
            id,
            facts,
            peer,
            busy,
            sockets: 0,
            idle: Vec::new(),
        });
    }

    /// Workers are up and none of them serves ASGI: a WebSocket has
    /// nowhere to go (while none is up, it gets the usual 503).
    pub fn only_wsgi(&self) -> bool {
        let inner = self.lock();
        !inner.workers.is_empty()
            && inner
                .workers
                .iter()
                .all(|w| w.interface() == Interface::Wsgi)
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
        let mut inner = self.lock();
        let Some(pos) = inner.workers.iter().position(|w| w.id == id) else {
            return;
        };
        let gone = inner.workers.remove(pos);
        if gone.busy > 0 {
            inner.leaving.push((id, gone.facts));
        }
    }

    /// Every worker this edge routes to or still waits on, with the
    /// requests each is running, for `corral status` and `corral dump`.
    pub fn report(&self) -> Report {
        let mut inner = self.lock();
        let now = Instant::now();
        let running = |inner: &Inner, id: u64| -> Vec<(Job, Duration)> {
            let mut jobs: Vec<_> = inner
                .running
                .iter()
                .filter(|(_, r)| r.worker == id)
                .map(|(_, r)| (r.job.clone(), now - r.since))
                .collect();
            jobs.sort_by_key(|j| std::cmp::Reverse(j.1));
            jobs
        };
        let mut workers = Vec::new();
        for w in &inner.workers {
            let state = if w.busy > 0 { State::Busy } else { State::Idle };
            let jobs = running(&inner, w.id);
            workers.push(WorkerReport::new(w.id, &w.facts, state, jobs));
        }
        let mut leaving = std::mem::take(&mut inner.leaving);
        leaving.retain(|(id, facts)| {
            let jobs = running(&inner, *id);
            let keep = !jobs.is_empty();
            if keep {
                workers.push(WorkerReport::new(*id, facts, State::Draining, jobs));
            }
            keep
        });
        inner.leaving = leaving;
        Report {
            queued: inner.waiters.len(),
            workers,
        }
    }
}

impl Inner {
    /// A lease that never reached its waiter: its slot and its record go
    /// back without passing through `release` (the worker stays taken, for
    /// the next waiter).
    fn unlease(&mut self, mut lease: Lease) {
        lease.live = false;
        self.running.try_remove(lease.slot);
    }
}

/// What a worker is doing, as `corral status` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Busy,
    /// Out of service (draining, replaced, timed out), still running requests.
    Draining,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Busy => "busy",
            State::Draining => "draining",
        }
    }
}

pub struct WorkerReport {
    pub id: u64,
    pub facts: Facts,
    pub state: State,
    /// Its requests, the longest-running first, with how long each has run.
    pub running: Vec<(Job, Duration)>,
}

impl WorkerReport {
    fn new(id: u64, facts: &Facts, state: State, running: Vec<(Job, Duration)>) -> Self {
        WorkerReport {
            id,
            facts: facts.clone(),
            state,
            running,
        }
    }
}

pub struct Report {
    pub queued: usize,
    pub workers: Vec<WorkerReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync() -> Facts {
        facts(Interface::Wsgi, 1)
    }

    fn facts(interface: Interface, capacity: usize) -> Facts {
        Facts {
            pid: 1,
            replaced: None,
            interface,
            capacity,
            up_at: Instant::now(),
            stacks: "w.stacks".into(),
        }
    }

    fn job() -> Job {
        Job {
            request: "GET /".into(),
            id: "test".into(),
        }
    }

    #[test]
    fn websockets_leave_a_tenth_of_each_worker_to_http() {
        rt().block_on(async {
            let pool = Pool::new(10, Duration::from_millis(50), Default::default());
            pool.worker_up(1, Peer::Unix("a".into()), facts(Interface::Asgi, 20));
            let sockets: Vec<Lease> = (0..18)
                .map(|_| pool.acquire_socket(&[], &job()).unwrap())
                .collect();
            assert_eq!(
                pool.acquire_socket(&[], &job()).err(),
                Some(Refused::NoRoomForSocket)
            );
            let http: Vec<Lease> = vec![
                pool.acquire(&[], &job()).await.unwrap(),
                pool.acquire(&[], &job()).await.unwrap(),
            ];
            drop(sockets);
            // Freed WebSocket slots count for WebSockets again.
            assert!(pool.acquire_socket(&[], &job()).is_ok());
            drop(http);
            // A WSGI worker takes no WebSockets at all.
            let wsgi = Pool::new(10, Duration::from_millis(50), Default::default());
            wsgi.worker_up(2, Peer::Unix("b".into()), sync());
            assert_eq!(
                wsgi.acquire_socket(&[], &job()).err(),
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
            pool.worker_up(1, Peer::Unix("a".into()), sync());
            pool.worker_up(2, Peer::Unix("b".into()), sync());
            let a = pool.acquire(&[], &job()).await.unwrap();
            let b = pool.acquire(&[], &job()).await.unwrap();
            assert_ne!(a.worker, b.worker);
            assert_eq!(
                pool.acquire(&[], &job()).await.err(),
                Some(Refused::Timeout)
            );
            drop(a);
            assert!(pool.acquire(&[], &job()).await.is_ok());
        });
    }

    #[test]
    fn queue_is_fifo_and_bounded() {
        rt().block_on(async {
            let pool = Pool::new(2, Duration::from_secs(5), Default::default());
            pool.worker_up(1, Peer::Unix("a".into()), sync());
            let first = pool.acquire(&[], &job()).await.unwrap();
            let p1 = pool.clone();
            let w1 = tokio::spawn(async move { p1.acquire(&[], &job()).await.map(|l| (1, l)) });
            tokio::task::yield_now().await;
            let p2 = pool.clone();
            let w2 = tokio::spawn(async move { p2.acquire(&[], &job()).await.map(|l| (2, l)) });
            tokio::task::yield_now().await;
            assert_eq!(
                pool.acquire(&[], &job()).await.err(),
                Some(Refused::QueueFull)
            );
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
            let waiting =
                tokio::spawn(async move { p.acquire(&[], &job()).await.map(|l| l.worker) });
            tokio::task::yield_now().await;
            pool.worker_up(7, Peer::Unix("w".into()), sync());
            assert_eq!(waiting.await.unwrap(), Ok(7));
        });
    }
}
