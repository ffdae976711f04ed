//! Choosing a worker for a request: least outstanding requests among the
//! workers that are up (of those, the newest code: after a reload the new
//! code answers while the old workers are replaced), and a bounded FIFO
//! queue when all are busy.
//!
//! Invariants: a worker's `busy` counts the leases running on it and never
//! exceeds `capacity`. A released lease goes straight to the oldest
//! waiter, which keeps the queue strictly first-in, first-out. Leases
//! release on drop, so every error path gives the worker back.
//!
//! **Ahead.** A single-threaded WSGI worker (`threads = 1`) may also hold
//! up to `AHEAD_DEPTH` requests *ahead*: when every worker is busy, a
//! request that would wait in the queue is written to a busy worker at
//! once, which runs it the moment the ones before it end, without sleeping
//! in between (`worker/in_turn.rs`). The oldest is promoted to running
//! when the current lease ends. The queue only forms once every worker's
//! places ahead are taken.
//! The cost is head-of-line blocking, so a request ahead is taken back
//! (*rescued*) when another worker comes free with nobody queued, or once
//! it has waited `AHEAD_PATIENCE` when another worker has room (a free
//! slot or its place ahead), before the queue: that worker's lease is sent
//! to it, and it withdraws itself from the busy one (`wire/withdraw.rs`).
//! Which busy worker: the one whose request started last, since a request
//! that has already run long tends to run longer.
//! A request ahead is written only once the one before it is (`Order`):
//! the worker serves them in the order they arrive. One with a large body
//! never goes ahead (`fits_ahead`).
//!
//! Each lease also records its request (a `Job`) while it is out, so
//! `corral status` and `corral dump` can say what every worker is running.

use crate::edge::app::job::{Job, Work};
use crate::edge::app::peer::{Peer, Stream};
use crate::edge::metrics::Metrics;
use crate::ipc::Interface;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tokio::sync::oneshot;

/// How long a request may wait ahead before a worker with room takes it
/// back even though others are queued: at least this, and twice the pool's
/// typical request. By then it is most likely behind a slow request, and
/// it came before those queued.
const AHEAD_PATIENCE: Duration = Duration::from_millis(20);

/// The largest body a request sent ahead may carry. The request is written
/// whole before the worker reads it, and a body past the socket's send
/// buffer (~208 KiB by default) would block its writer until the busy
/// worker's current request ends, deaf to a rescue; such a request queues.
const AHEAD_MAX_BODY: u64 = 64 * 1024;

/// How many requests a busy worker may hold ahead of the one it runs.
/// With one, a worker that finishes its current request and the one
/// ahead before the edge has written the next sleeps and must be woken:
/// on hello under `wrk -c64` workers slept after 70% of requests. Two
/// cover the edge's own wake-up (48%, +18% req/s, 6% less CPU per
/// request); three measured no better than two and lengthen the line a
/// request can wait in behind a slow one.
const AHEAD_DEPTH: usize = 2;

/// Whether a request with a body of `len` bytes may wait ahead.
pub fn fits_ahead(len: u64) -> bool {
    len <= AHEAD_MAX_BODY
}

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
    /// The reload generation whose code it runs.
    pub code: u64,
}

struct Worker {
    id: u64,
    facts: Facts,
    peer: Peer,
    busy: usize,
    /// Of `busy`, the slots held by open WebSockets.
    sockets: usize,
    /// The requests sent ahead (their keys in `running`), oldest first:
    /// the front one runs next.
    ahead: VecDeque<usize>,
    /// The request running, for a worker that takes one ahead.
    current: Option<usize>,
    /// When its latest request began running.
    started: Instant,
    /// Resolves once the latest request granted here has been written (or
    /// will not be): the next one sent ahead writes after it (`Order`).
    last_written: Option<oneshot::Receiver<()>>,
    /// Tells this entry from an earlier one with the same id (a worker
    /// suspected, then announced again): leases of the earlier one must
    /// not count here.
    generation: u64,
    /// Pooled connections, each with the edge thread it was opened on: a
    /// socket wakes the runtime it is registered with, so a request takes
    /// one of its own thread's (each edge thread is a runtime of its own).
    idle: Vec<(ThreadId, Conn)>,
}

/// Where a worker can take one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A free slot: it runs at once.
    Running,
    /// Behind the one running (see "Ahead" above).
    Ahead,
}

impl Worker {
    fn capacity(&self) -> usize {
        self.facts.capacity
    }

    fn interface(&self) -> Interface {
        self.facts.interface
    }

    /// Only a worker serving its connections in turn on one thread takes a
    /// request ahead: a thread per connection would sleep and be woken for
    /// it anyway, and an ASGI worker runs many at once.
    fn takes_ahead(&self) -> bool {
        self.interface() == Interface::Wsgi
            && self.capacity() == 1
            && matches!(self.peer, Peer::Unix(_))
    }

    fn forget_ahead(&mut self, slot: usize) {
        self.ahead.retain(|&s| s != slot);
    }

    fn forget_current(&mut self, slot: usize) {
        if self.current == Some(slot) {
            self.current = None;
        }
    }

    fn opening(&self) -> Option<Place> {
        if self.busy < self.capacity() {
            Some(Place::Running)
        } else if self.takes_ahead() && self.ahead.len() < AHEAD_DEPTH {
            Some(Place::Ahead)
        } else {
            None
        }
    }
}

struct Waiter {
    ticket: u64,
    tx: oneshot::Sender<Lease>,
    job: Job,
    /// The edge thread its request runs on, and how many later requests
    /// of another thread were served before it (`Inner::next_waiter`).
    thread: ThreadId,
    passed: usize,
    /// Workers it must not be given: those it just failed on.
    avoid: Vec<u64>,
}

/// A request's place in the queue, given up when it stops waiting: timed
/// out, or dropped because its client left. A waiter left behind would
/// count against `queue_size` until a worker came free for it.
struct QueuePlace<'a> {
    pool: &'a Pool,
    ticket: u64,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        let mut inner = self.pool.lock();
        inner.waiters.retain(|w| w.ticket != self.ticket);
    }
}

/// How far a freed worker may look past the queue's head for a request on
/// its own thread, and how many times a request may be passed over so.
/// Counted, not timed: under a deep queue every head has waited long,
/// yet each hand-off to another thread still costs that thread a wake-up.
const SAME_THREAD_WINDOW: usize = 16;
const SAME_THREAD_PASSES: usize = 8;

/// A request a worker has taken and not finished.
struct Running {
    worker: u64,
    /// Its worker entry's `generation`.
    generation: u64,
    job: Job,
    since: Instant,
    place: Place,
    /// When it began running, if it was sent ahead.
    promoted: Option<Instant>,
    /// Ahead and not yet rescued: where to tell it to move.
    rescue: Option<oneshot::Sender<Rescue>>,
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
    /// How long a request runs, as a moving average (see `AHEAD_PATIENCE`).
    typical_run: Duration,
    /// Worker entries made so far (see `Worker::generation`).
    generations: u64,
}

impl Inner {
    /// Requests waiting for a worker: queued, or sent ahead to a busy one
    /// (both count against `queue_size`).
    fn waiting(&self) -> usize {
        self.waiters.len() + self.workers.iter().map(|w| w.ahead.len()).sum::<usize>()
    }

    /// Where the worker entry a request was granted on is, if it still is.
    fn position_of(&self, r: &Running) -> Option<usize> {
        self.workers
            .iter()
            .position(|w| w.id == r.worker && w.generation == r.generation)
    }

    /// Gives waiters what worker `pos` can take: free slots, then its
    /// place ahead. A request stuck ahead elsewhere is first told to come
    /// back to the head of the queue, so it is served before those queued.
    fn offer(&mut self, pool: &Arc<Pool>, pos: usize) {
        if self.workers[pos].opening().is_some() {
            self.recall_overdue(pos);
        }
        let worker = self.workers[pos].id;
        while let Some(place) = self.workers[pos].opening() {
            let too_large = |w: &Waiter| place == Place::Ahead && !w.job.fits_ahead;
            if self.waiters.front().is_none_or(too_large) {
                return; // (the head waits for a free slot: first come, first served)
            }
            // A request recalled more than once may have avoided every
            // worker by now: then any will do, or it would wait forever.
            let ids: Vec<u64> = self.workers.iter().map(|x| x.id).collect();
            let avoidable = |w: &Waiter| {
                w.avoid.contains(&worker) && !ids.iter().all(|id| w.avoid.contains(id))
            };
            let fits = |w: &Waiter| !too_large(w) && !avoidable(w);
            let Some(waiter) = self.next_waiter(fits) else {
                return;
            };
            let lease = self.grant(pool, pos, place, waiter.job);
            if let Err(lease) = waiter.tx.send(lease) {
                self.unlease(lease); // waiter timed out; try the next
            }
        }
    }

    /// The waiter to serve next: the head, unless one of the next few is
    /// on this thread and none before it has been passed over too often.
    /// Each edge thread is a runtime of its own, and waking a request on
    /// another thread costs that thread a wake-up (and chains the next
    /// request ahead on that worker to it); nginx has no shared queue at
    /// all, so this bounded reordering still keeps the order users see.
    /// Only a waiter that `fits` is served; the first such is the head.
    fn next_waiter(&mut self, fits: impl Fn(&Waiter) -> bool) -> Option<Waiter> {
        let here = std::thread::current().id();
        let first = self.waiters.iter().position(&fits)?;
        if self.waiters[first].thread != here {
            let near = (first + 1..self.waiters.len())
                .take(SAME_THREAD_WINDOW - 1)
                .find(|&i| self.waiters[i].thread == here && fits(&self.waiters[i]));
            if let Some(at) = near {
                let skipped = self.waiters.range(first..at);
                if skipped.clone().all(|w| w.passed < SAME_THREAD_PASSES) {
                    self.waiters
                        .range_mut(first..at)
                        .for_each(|w| w.passed += 1);
                    return self.waiters.remove(at);
                }
            }
        }
        self.waiters.remove(first)
    }

    /// Tells each request that has waited ahead past its patience to come
    /// back (`Rescue::Requeue`). It withdraws itself and queues again at
    /// the front; it keeps its place meanwhile, so nothing is counted twice.
    /// On a worker with some ahead, its running request is asked too: it
    /// may be the one waiting. Either is asked once; the worker's answer
    /// ("running") settles it. Those ahead on worker `opening` itself stay:
    /// they are next there, and taken back they would queue behind
    /// whoever takes its opening first (with one worker, out of order).
    fn recall_overdue(&mut self, opening: usize) {
        if self.workers.iter().all(|w| w.ahead.is_empty()) {
            return;
        }
        let patience = AHEAD_PATIENCE.max(self.typical_run * 2);
        let Some(before) = Instant::now().checked_sub(patience) else {
            return;
        };
        let elsewhere = |(i, w): &(usize, &Worker)| *i != opening && !w.ahead.is_empty();
        for (_, w) in self.workers.iter().enumerate().filter(elsewhere) {
            for &slot in w.ahead.iter().chain(&w.current) {
                let Some(r) = self.running.get_mut(slot) else {
                    continue;
                };
                if r.since <= before {
                    if let Some(tx) = r.rescue.take() {
                        let _ = tx.send(Rescue::Requeue);
                    }
                }
            }
        }
    }

    /// Worker `pos` is idle and nobody waits: takes back the request sent
    /// ahead longest ago, wherever it waits, by sending it this worker's
    /// lease.
    fn rescue(&mut self, pool: &Arc<Pool>, pos: usize) {
        while self.workers[pos].busy == 0 {
            // (A promoted request keeps its sender, unused: dropping it
            // would wake its task for nothing.)
            let oldest = self
                .running
                .iter()
                .filter(|(_, r)| r.place == Place::Ahead && r.rescue.is_some())
                .min_by_key(|(_, r)| r.since);
            let Some((slot, r)) = oldest else {
                return;
            };
            let job = r.job.clone();
            let Some(tx) = self.running[slot].rescue.take() else {
                return;
            };
            let lease = self.grant(pool, pos, Place::Running, job);
            if let Err(Rescue::Here(lease)) = tx.send(Rescue::Here(lease)) {
                self.unlease(lease);
            }
        }
    }

    /// A lease on worker `pos` in `place`, counted; for a place ahead, also
    /// where a rescue will come.
    fn grant(&mut self, pool: &Arc<Pool>, pos: usize, place: Place, job: Job) -> Lease {
        let since = Instant::now();
        let w = &self.workers[pos];
        // (Only such a worker has a place ahead.) Its running request can
        // be recalled too, as a guard behind `Order`: should the one sent
        // ahead run first after all, the recall settles it.
        let takes_ahead = w.takes_ahead();
        let (tx, rx) = if takes_ahead {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (id, peer, interface, pid) = (w.id, w.peer.clone(), w.interface(), w.facts.pid);
        let generation = w.generation;
        let slot = self.running.insert(Running {
            worker: id,
            generation,
            job,
            since,
            place,
            promoted: None,
            rescue: tx,
        });
        let w = &mut self.workers[pos];
        match place {
            Place::Running => {
                w.busy += 1;
                w.started = since;
                w.current = Some(slot);
            }
            Place::Ahead => w.ahead.push_back(slot),
        }
        let mut lease = pool.lease(id, peer, interface, slot, pid);
        if takes_ahead {
            let (written, next_after) = oneshot::channel();
            let last = w.last_written.replace(next_after);
            lease.order = Order {
                rescue: rx,
                after: if place == Place::Ahead { last } else { None },
                written: Some(written),
            };
        }
        lease.names_links = takes_ahead;
        lease.sent_ahead = place == Place::Ahead;
        lease
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
    /// When the request began running in its worker.
    pub fn taken(&self) -> Instant {
        self.taken
    }

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
    /// Its place in its worker's line, for one that takes requests ahead.
    order: Order,
    /// The worker takes requests ahead: its connections are named, so a
    /// request can be taken back (`wire::withdraw`).
    pub names_links: bool,
    /// Granted a place ahead (it may have been promoted since).
    sent_ahead: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.live {
            self.live = false;
            if !self.socket {
                let took = self.begun().taken.elapsed();
                self.pool.metrics.worked(took, self.worker);
            }
            self.pool.release(self.worker, self.socket, self.slot);
        }
    }
}

/// A request's place in the line of a worker that takes one ahead
/// (empty for other workers).
///
/// Such a worker serves its connections in the order their requests
/// arrive, so the edge must write them in the order the pool granted
/// them: two edge threads granted the running place and the place ahead
/// microseconds apart could otherwise write them the other way round, and
/// the request the pool believes running would wait, timed by
/// `app.timeout`, behind the one it believes waiting.
#[derive(Default)]
pub struct Order {
    /// Sent ahead (or running where one may be): word if it should move.
    pub rescue: Option<oneshot::Receiver<Rescue>>,
    /// Sent ahead: resolves once the request before it is written.
    pub after: Option<oneshot::Receiver<()>>,
    /// Tells the request after it that this one is written (dropped
    /// unsent when it never will be, which tells it as well).
    pub written: Option<oneshot::Sender<()>>,
}

/// Why a request sent ahead should withdraw from where it waits.
pub enum Rescue {
    /// A worker came free with nobody queued: run it there.
    Here(Lease),
    /// It has waited past its patience while others had room: queue again,
    /// at the front.
    Requeue,
}

/// Where a request sent ahead stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Still behind the worker's current request.
    Waiting,
    /// Running since then.
    Began(Instant),
}

impl Lease {
    /// Its place in its worker's line (once): where a rescue will come,
    /// and the order it must be written in.
    pub fn take_order(&mut self) -> Order {
        std::mem::take(&mut self.order)
    }

    /// When the request began running in the worker.
    pub fn turn(&self) -> Turn {
        if !self.sent_ahead {
            return Turn::Began(self.taken);
        }
        let inner = self.pool.lock();
        match inner.running.get(self.slot) {
            Some(r) if r.place == Place::Ahead => Turn::Waiting,
            Some(Running {
                promoted: Some(at), ..
            }) => Turn::Began(*at),
            _ => Turn::Began(self.taken),
        }
    }

    /// Whether it was granted a place ahead.
    pub fn sent_ahead(&self) -> bool {
        self.sent_ahead
    }

    /// When the worker took the request (for one sent ahead: when it was
    /// sent).
    pub fn taken(&self) -> Instant {
        self.taken
    }

    /// Counts an earlier wait of the same request (in the queue, or ahead
    /// on another worker until it was taken back) as queueing here too.
    pub fn queued_before(&mut self, earlier: Duration) {
        self.waited += earlier;
    }

    /// When a request sent ahead has waited as long as the queue allows.
    pub fn queue_deadline(&self) -> Instant {
        self.taken - self.waited + self.pool.queue_timeout
    }

    /// An idle pooled connection to this worker opened on this thread, if any.
    pub fn take_conn(&self) -> Option<Conn> {
        let here = std::thread::current().id();
        let mut inner = self.pool.lock();
        let idle = &mut inner.workers.iter_mut().find(|w| w.id == self.worker)?.idle;
        let at = idle.iter().rposition(|(thread, _)| *thread == here)?;
        Some(idle.swap_remove(at).1)
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
    /// A request sent ahead counts its wait there as queueing, not as
    /// time in the app.
    pub fn begun(&self) -> Begun {
        let (queue, taken) = match self.turn() {
            Turn::Began(at) => (self.waited + at.saturating_duration_since(self.taken), at),
            Turn::Waiting => (self.waited + self.taken.elapsed(), Instant::now()),
        };
        Begun {
            queue,
            taken,
            worker: self.pid,
        }
    }

    /// Returns a connection that finished a response cleanly.
    pub fn put_conn(&self, conn: Conn) {
        let mut inner = self.pool.lock();
        if let Some(w) = inner.workers.iter_mut().find(|w| w.id == self.worker) {
            let here = std::thread::current().id();
            let kept = w.idle.iter().filter(|(thread, _)| *thread == here).count();
            if kept < w.capacity().clamp(MIN_IDLE_CONNS, MAX_IDLE_CONNS) {
                w.idle.push((here, conn));
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
                typical_run: Duration::ZERO,
                generations: 0,
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
        self.acquire_in(avoid, job, None).await
    }

    /// As `acquire`, for a request recalled from a place ahead: it waited
    /// longer than anyone queued, so it queues at the front, until the
    /// queue's time limit counted from when it first asked.
    pub async fn reacquire(
        self: &Arc<Self>,
        avoid: &[u64],
        job: &Job,
        give_up: Instant,
    ) -> Result<Lease, Refused> {
        self.acquire_in(avoid, job, Some(give_up)).await
    }

    async fn acquire_in(
        self: &Arc<Self>,
        avoid: &[u64],
        job: &Job,
        recalled: Option<Instant>,
    ) -> Result<Lease, Refused> {
        let asked = Instant::now();
        let mut lease = self.wait_for_worker(avoid, job, recalled).await;
        if let Ok(lease) = &mut lease {
            lease.waited = asked.elapsed();
            self.metrics.waited(lease.waited);
        }
        lease
    }

    async fn wait_for_worker(
        self: &Arc<Self>,
        avoid: &[u64],
        job: &Job,
        recalled: Option<Instant>,
    ) -> Result<Lease, Refused> {
        let front = recalled.is_some();
        let (ticket, rx) = {
            let mut inner = self.lock();
            // A recalled request was already let in; others wait ahead or
            // queued only while `queue_size` allows.
            let may_wait = front || inner.waiting() < self.queue_size;
            if inner.waiters.is_empty() || front {
                if let Some((pos, place)) = inner.pick(avoid, job.fits_ahead && may_wait) {
                    return Ok(inner.grant(self, pos, place, job.clone()));
                }
            }
            if !may_wait {
                return Err(Refused::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            let ticket = inner.next_ticket;
            inner.next_ticket += 1;
            let waiter = Waiter {
                ticket,
                tx,
                job: job.clone(),
                thread: std::thread::current().id(),
                passed: 0,
                avoid: avoid.to_vec(),
            };
            if front {
                inner.waiters.push_front(waiter);
            } else {
                inner.waiters.push_back(waiter);
            }
            (ticket, rx)
        };
        let _place = QueuePlace { pool: self, ticket };
        let give_up = recalled.unwrap_or_else(|| Instant::now() + self.queue_timeout);
        match tokio::time::timeout_at(give_up.into(), rx).await {
            Ok(Ok(lease)) => Ok(lease),
            _ => Err(Refused::Timeout),
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
            order: Order::default(),
            names_links: false,
            sent_ahead: false,
        }
    }

    /// A slot for a WebSocket: at once (`acquire_socket`), or, while no
    /// worker is up at all (all dead and respawning, say: a handshake whose
    /// worker died runs again), as soon as one is, within `queue_timeout`.
    /// Checked every 50 ms: WebSockets never wait in the request queue,
    /// and this wait is for the rare minutes of a whole pool's respawn.
    pub async fn acquire_socket_soon(
        self: &Arc<Self>,
        avoid: &[u64],
        job: &Job,
    ) -> Result<Lease, Refused> {
        let give_up = Instant::now() + self.queue_timeout;
        loop {
            match self.acquire_socket(avoid, job) {
                Err(Refused::NoRoomForSocket) if !self.any_worker_up(avoid) => {}
                done => return done,
            }
            if Instant::now() >= give_up {
                return Err(Refused::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Some worker not in `avoid` is up.
    pub fn any_worker_up(&self, avoid: &[u64]) -> bool {
        self.lock().workers.iter().any(|w| !avoid.contains(&w.id))
    }

    /// A slot for a WebSocket on an ASGI worker, now or never: the least
    /// busy one whose WebSocket share is not taken.
    pub fn acquire_socket(self: &Arc<Self>, avoid: &[u64], job: &Job) -> Result<Lease, Refused> {
        let mut inner = self.lock();
        let pick = inner
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.interface() == Interface::Asgi && !avoid.contains(&w.id))
            .filter(|(_, w)| w.busy < w.capacity() && w.sockets < socket_share(w.capacity()))
            .min_by_key(|(_, w)| w.busy);
        let Some((pos, _)) = pick else {
            return Err(Refused::NoRoomForSocket);
        };
        inner.workers[pos].sockets += 1;
        let mut lease = inner.grant(self, pos, Place::Running, job.clone());
        lease.socket = true;
        Ok(lease)
    }

    /// Gives a worker slot back: to the oldest live waiter, or to the pool.
    fn release(self: &Arc<Self>, worker: u64, socket: bool, slot: usize) {
        let mut inner = self.lock();
        let Some(ended) = inner.running.try_remove(slot) else {
            return;
        };
        let Some(pos) = inner.position_of(&ended) else {
            // The worker went down meanwhile (draining, replaced): what it
            // holds ahead runs now, and is timed from now.
            if ended.place == Place::Running {
                inner.promote_leaving(worker, ended.generation);
            }
            return;
        };
        if socket {
            let w = &mut inner.workers[pos];
            w.sockets = w.sockets.saturating_sub(1);
        } else if ended.place == Place::Running {
            // WebSockets are not requests: their hours would say nothing.
            let ran = ended.promoted.unwrap_or(ended.since).elapsed();
            inner.typical_run = (inner.typical_run * 7 + ran) / 8;
        }
        let w = &mut inner.workers[pos];
        match ended.place {
            Place::Ahead => w.forget_ahead(slot),
            Place::Running => {
                w.busy = w.busy.saturating_sub(1);
                w.forget_current(slot);
                if let Some(next) = w.ahead.pop_front() {
                    inner.promote(pos, next);
                }
            }
        }
        inner.offer(self, pos);
        inner.rescue(self, pos);
    }

    /// A worker is ready: add it and let it serve waiting requests at once.
    pub fn worker_up(self: &Arc<Self>, id: u64, peer: Peer, mut facts: Facts) {
        facts.capacity = facts.capacity.max(1);
        let mut inner = self.lock();
        if inner.workers.iter().any(|w| w.id == id) {
            return;
        }
        inner.leaving.retain(|(w, _)| *w != id);
        inner.generations += 1;
        let generation = inner.generations;
        inner.workers.push(Worker {
            id,
            facts,
            peer,
            busy: 0,
            sockets: 0,
            ahead: VecDeque::new(),
            current: None,
            started: Instant::now(),
            last_written: None,
            generation,
            idle: Vec::new(),
        });
        let pos = inner.workers.len() - 1;
        inner.offer(self, pos);
        inner.rescue(self, pos);
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
        // Requests sent ahead wait for a worker too, only nearer to it.
        Census {
            queued: inner.waiting(),
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
                .filter(|(_, r)| r.worker == id && r.place == Place::Running)
                .map(|(_, r)| (r.job.clone(), now - r.promoted.unwrap_or(r.since)))
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
        let ahead = inner
            .running
            .iter()
            .filter(|(_, r)| r.place == Place::Ahead);
        Report {
            queued: inner.waiters.len() + ahead.count(),
            workers,
        }
    }
}

impl Inner {
    /// Where a request that does not queue goes: the least busy worker
    /// with a free slot (of the newest code), else a place ahead on the worker with the fewest
    /// ahead, behind the request that started last among those.
    fn pick(&self, avoid: &[u64], fits_ahead: bool) -> Option<(usize, Place)> {
        let usable = || {
            self.workers
                .iter()
                .enumerate()
                .filter(|(_, w)| !avoid.contains(&w.id))
        };
        // Of the least busy, one of the newest code: once a reload is
        // done, the new code answers (its canary first) while the old
        // workers are replaced one by one; they serve only the overflow.
        let free = usable()
            .filter(|(_, w)| w.opening() == Some(Place::Running))
            .min_by_key(|(_, w)| (w.busy, std::cmp::Reverse(w.facts.code)));
        if let Some((pos, _)) = free {
            return Some((pos, Place::Running));
        }
        if !fits_ahead {
            return None;
        }
        usable()
            .filter(|(_, w)| w.opening() == Some(Place::Ahead))
            .min_by_key(|(_, w)| (w.ahead.len(), std::cmp::Reverse(w.started)))
            .map(|(pos, _)| (pos, Place::Ahead))
    }

    /// A worker no longer in the pool finished a request: the one it
    /// held ahead, if any, runs now.
    fn promote_leaving(&mut self, worker: u64, generation: u64) {
        let now = Instant::now();
        let ahead = self
            .running
            .iter_mut()
            .filter(|(_, r)| {
                r.worker == worker && r.generation == generation && r.place == Place::Ahead
            })
            .min_by_key(|(_, r)| r.since);
        if let Some((_, r)) = ahead {
            r.place = Place::Running;
            r.promoted = Some(now);
        }
    }

    /// The request ahead on worker `pos` now runs.
    fn promote(&mut self, pos: usize, slot: usize) {
        let now = Instant::now();
        let w = &mut self.workers[pos];
        w.busy += 1;
        w.started = now;
        w.current = Some(slot);
        if let Some(r) = self.running.get_mut(slot) {
            r.place = Place::Running;
            r.promoted = Some(now);
        }
    }

    /// A lease that never reached its waiter: its slot and its record go
    /// back without passing through `release`.
    fn unlease(&mut self, mut lease: Lease) {
        lease.live = false;
        let Some(r) = self.running.try_remove(lease.slot) else {
            return;
        };
        let Some(pos) = self.position_of(&r) else {
            return;
        };
        let w = &mut self.workers[pos];
        match r.place {
            Place::Ahead => w.forget_ahead(lease.slot),
            Place::Running => {
                w.busy = w.busy.saturating_sub(1);
                w.forget_current(lease.slot);
            }
        }
        if lease.socket {
            w.sockets = w.sockets.saturating_sub(1);
        }
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
            code: 0,
        }
    }

    fn job() -> Job {
        Job {
            request: "GET /".into(),
            id: "test".into(),
            fits_ahead: true,
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

    fn two_sync_workers(queue_timeout: Duration) -> Arc<Pool> {
        let pool = Pool::new(10, queue_timeout, Default::default());
        pool.worker_up(1, Peer::Unix("a".into()), sync());
        pool.worker_up(2, Peer::Unix("b".into()), sync());
        pool
    }

    const BOTH_IDLE: Census = Census {
        queued: 0,
        idle: 2,
        busy: 0,
    };

    #[test]
    fn least_busy_then_ahead_evenly_then_the_queue() {
        rt().block_on(async {
            let pool = two_sync_workers(Duration::from_secs(5));
            let a = pool.acquire(&[], &job()).await.unwrap();
            std::thread::sleep(Duration::from_millis(2));
            let b = pool.acquire(&[], &job()).await.unwrap();
            assert_ne!(a.worker, b.worker);
            assert_eq!(
                (a.turn(), b.turn()),
                (Turn::Began(a.taken), Turn::Began(b.taken))
            );
            // Every worker busy: ahead, on the worker with the fewest ahead,
            // behind the request that started last.
            let mut ahead = Vec::new();
            for _ in 0..2 * AHEAD_DEPTH {
                ahead.push(pool.acquire(&[], &job()).await.unwrap());
            }
            let on: Vec<u64> = ahead.iter().map(|l| l.worker).collect();
            assert_eq!(on[..4], [b.worker, a.worker, b.worker, a.worker]);
            assert!(ahead.iter().all(|l| l.turn() == Turn::Waiting));
            // Then the queue.
            let p = pool.clone();
            let e = tokio::spawn(async move { p.acquire(&[], &job()).await });
            tokio::task::yield_now().await;
            assert_eq!(pool.census().queued, 2 * AHEAD_DEPTH + 1);
            // The running one ends: the oldest ahead runs, the queued one
            // takes the place ahead.
            drop(b);
            assert!(matches!(ahead[0].turn(), Turn::Began(_)));
            assert_eq!(ahead[2].turn(), Turn::Waiting);
            let e = e.await.unwrap().unwrap();
            assert_eq!((e.worker, e.turn()), (ahead[0].worker, Turn::Waiting));
            assert_eq!(pool.census().queued, 2 * AHEAD_DEPTH);
            drop((a, ahead, e));
            assert_eq!(pool.census(), BOTH_IDLE);
        });
    }

    /// After a reload: the idle worker of the new code takes a request
    /// before idle ones of the old code, which get the overflow; among
    /// workers of one code, the first up (a warm worker) goes first.
    #[test]
    fn the_newest_code_first_then_the_oldest_worker() {
        rt().block_on(async {
            let pool = Pool::new(10, Duration::from_secs(5), Default::default());
            pool.worker_up(1, Peer::Unix("a".into()), sync());
            pool.worker_up(2, Peer::Unix("b".into()), sync());
            let new_code = Facts { code: 1, ..sync() };
            pool.worker_up(3, Peer::Unix("c".into()), new_code);
            let first = pool.acquire(&[], &job()).await.unwrap();
            assert_eq!(first.worker, 3);
            let second = pool.acquire(&[], &job()).await.unwrap();
            assert_eq!(second.worker, 1);
            drop((first, second));
            // One code only: the first up, every time it is free.
            let pool = two_sync_workers(Duration::from_secs(5));
            for _ in 0..3 {
                assert_eq!(pool.acquire(&[], &job()).await.unwrap().worker, 1);
            }
        });
    }

    /// One single-threaded worker: a request running, one ahead of it.
    async fn running_and_one_ahead() -> (Arc<Pool>, Lease, Lease) {
        let pool = Pool::new(10, Duration::from_secs(5), Default::default());
        pool.worker_up(1, Peer::Unix("a".into()), sync());
        let running = pool.acquire(&[], &job()).await.unwrap();
        let ahead = pool.acquire(&[], &job()).await.unwrap();
        assert_eq!(ahead.turn(), Turn::Waiting);
        (pool, running, ahead)
    }

    #[test]
    fn a_request_ahead_is_written_after_the_one_before_it() {
        rt().block_on(async {
            let (pool, mut a, mut b) = running_and_one_ahead().await;
            let mut c = pool.acquire(&[], &job()).await.unwrap();
            assert_eq!(c.turn(), Turn::Waiting, "a second place ahead");
            let (first, second, third) = (a.take_order(), b.take_order(), c.take_order());
            assert!(first.after.is_none(), "a running request waits for nobody");
            let mut after = second.after.expect("the one ahead waits for the first");
            let mut last = third.after.expect("and the next for it");
            assert!(after.try_recv().is_err(), "not before the first is written");
            first.written.expect("tells the next").send(()).unwrap();
            assert!(after.await.is_ok());
            assert!(last.try_recv().is_err(), "not before the second is written");
            second.written.expect("tells the next").send(()).unwrap();
            assert!(last.await.is_ok());
        });
    }

    #[test]
    fn a_request_ahead_goes_when_the_one_before_it_fails() {
        rt().block_on(async {
            let (pool, mut first, mut second) = running_and_one_ahead().await;
            let after = second.take_order().after.expect("sent ahead");
            drop(first.take_order());
            assert!(after.await.is_err(), "resolved by the dropped sender");
            drop((first, second));
            // Other workers' requests carry no order at all.
            pool.worker_up(2, Peer::Unix("b".into()), facts(Interface::Wsgi, 4));
            let mut c = pool.acquire(&[1], &job()).await.unwrap();
            let order = c.take_order();
            assert!(order.after.is_none() && order.written.is_none());
        });
    }

    #[test]
    fn a_request_with_a_large_body_queues_instead_of_going_ahead() {
        rt().block_on(async {
            let pool = two_sync_workers(Duration::from_secs(5));
            let a = pool.acquire(&[], &job()).await.unwrap();
            let b = pool.acquire(&[], &job()).await.unwrap();
            let large = job().with_body(AHEAD_MAX_BODY + 1);
            let p = pool.clone();
            let waiting = tokio::spawn(async move { p.acquire(&[], &large).await });
            tokio::task::yield_now().await;
            assert!(
                !waiting.is_finished(),
                "both places ahead are open, yet it waits"
            );
            // Nor does a worker's place ahead go to it from the queue.
            let small = job().with_body(10);
            let small = pool.acquire(&[], &small);
            let small = tokio::time::timeout(Duration::from_millis(50), small).await;
            assert!(small.is_err(), "the queue stays first come, first served");
            let b_worker = b.worker;
            drop(b);
            let large = waiting.await.unwrap().unwrap();
            assert_eq!(
                (large.worker, large.turn()),
                (b_worker, Turn::Began(large.taken))
            );
            drop((a, large));
            assert_eq!(pool.census(), BOTH_IDLE);
        });
    }

    #[test]
    fn a_free_worker_rescues_a_request_waiting_ahead() {
        rt().block_on(async {
            let pool = two_sync_workers(Duration::from_secs(5));
            let slow = pool.acquire(&[], &job()).await.unwrap();
            std::thread::sleep(Duration::from_millis(2));
            let quick = pool.acquire(&[], &job()).await.unwrap();
            let mut behind = pool.acquire(&[], &job()).await.unwrap();
            assert_eq!(behind.worker, quick.worker);
            let rescue = behind.take_order().rescue.expect("sent ahead");
            // `slow` ends first, nobody waits: its worker goes to `behind`.
            let slow_worker = slow.worker;
            drop(slow);
            let Ok(Rescue::Here(free)) = rescue.await else {
                panic!("not rescued");
            };
            assert_eq!(free.worker, slow_worker);
            // Taken back: its place ahead is free again; the next request
            // goes ahead of `free`, the request that started last.
            drop(behind);
            let next = pool.acquire(&[], &job()).await.unwrap();
            assert_eq!((next.worker, next.turn()), (free.worker, Turn::Waiting));
            let after = pool.acquire(&[], &job()).await.unwrap();
            assert_eq!((after.worker, after.turn()), (quick.worker, Turn::Waiting));
            drop(after);
            drop((quick, free, next));
            assert_eq!(pool.census(), BOTH_IDLE);
        });
    }

    #[test]
    fn a_request_ahead_too_long_is_recalled_to_the_head_of_the_queue() {
        rt().block_on(async {
            let pool = two_sync_workers(Duration::from_secs(5));
            let slow = pool.acquire(&[], &job()).await.unwrap();
            std::thread::sleep(Duration::from_millis(2));
            let quick = pool.acquire(&[], &job()).await.unwrap();
            let next = pool.acquire(&[], &job()).await.unwrap();
            let mut stuck = pool.acquire(&[], &job()).await.unwrap();
            assert_eq!((next.worker, stuck.worker), (quick.worker, slow.worker));
            let rescue = stuck.take_order().rescue.expect("sent ahead");
            // The other places ahead are taken too.
            let others = take_all(&pool, 2 * (AHEAD_DEPTH - 1)).await;
            let p = pool.clone();
            let waiter = tokio::spawn(async move { p.acquire(&[], &job()).await });
            tokio::task::yield_now().await;
            std::thread::sleep(AHEAD_PATIENCE + Duration::from_millis(5));
            // `quick` ends: `next` runs; the request stuck behind `slow` is
            // told to come back, and the place ahead freed goes to the queue.
            drop(quick);
            assert!(matches!(rescue.await, Ok(Rescue::Requeue)));
            let queued = waiter.await.unwrap().unwrap();
            assert_eq!((queued.worker, queued.turn()), (next.worker, Turn::Waiting));
            // It withdraws, and queues again at the front, away from `slow`.
            let give_up = stuck.queue_deadline();
            drop(stuck);
            let p = pool.clone();
            let avoid = [slow.worker];
            let again = tokio::spawn(async move { p.reacquire(&avoid, &job(), give_up).await });
            tokio::task::yield_now().await;
            let p = pool.clone();
            let later = tokio::spawn(async move { p.acquire(&[], &job()).await });
            tokio::task::yield_now().await;
            drop(next);
            let again = again.await.unwrap().unwrap();
            assert_eq!((again.worker, again.turn()), (queued.worker, Turn::Waiting));
            drop((slow, queued, again, others));
            drop(later.await.unwrap().unwrap());
            assert_eq!(pool.census(), BOTH_IDLE);
        });
    }

    #[test]
    fn only_single_threaded_wsgi_workers_take_requests_ahead() {
        rt().block_on(async {
            for facts in [facts(Interface::Wsgi, 2), facts(Interface::Asgi, 1)] {
                let pool = Pool::new(10, Duration::from_millis(50), Default::default());
                pool.worker_up(1, Peer::Unix("a".into()), facts.clone());
                let held: Vec<Lease> = take_all(&pool, facts.capacity).await;
                assert_eq!(
                    pool.acquire(&[], &job()).await.err(),
                    Some(Refused::Timeout),
                    "{facts:?}"
                );
                drop(held);
            }
            let tcp = Pool::new(10, Duration::from_millis(50), Default::default());
            tcp.worker_up(1, Peer::Tcp("127.0.0.1:1".parse().unwrap()), sync());
            let _one = tcp.acquire(&[], &job()).await.unwrap();
            assert!(tcp.acquire(&[], &job()).await.is_err());
        });
    }

    async fn take_all(pool: &Arc<Pool>, n: usize) -> Vec<Lease> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(pool.acquire(&[], &job()).await.unwrap());
        }
        held
    }

    #[test]
    fn queue_is_fifo_and_bounded() {
        rt().block_on(async {
            // Requests ahead wait too: they count against the queue's size.
            let pool = Pool::new(AHEAD_DEPTH + 2, Duration::from_secs(5), Default::default());
            pool.worker_up(1, Peer::Unix("a".into()), sync());
            let first = pool.acquire(&[], &job()).await.unwrap();
            let mut ahead = take_all(&pool, AHEAD_DEPTH).await;
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
            // The oldest ahead runs now; the oldest waiter takes the place
            // ahead, behind the others.
            let (n, lease) = w1.await.unwrap().unwrap();
            assert_eq!((n, lease.turn()), (1, Turn::Waiting));
            while !ahead.is_empty() {
                assert_eq!(lease.turn(), Turn::Waiting);
                assert!(matches!(ahead[0].turn(), Turn::Began(_)));
                drop(ahead.remove(0));
            }
            assert!(matches!(lease.turn(), Turn::Began(_)));
            drop(lease);
            assert_eq!(w2.await.unwrap().unwrap().0, 2);
        });
    }

    #[test]
    fn requests_ahead_count_against_the_queue_size() {
        rt().block_on(async {
            let pool = Pool::new(1, Duration::from_secs(5), Default::default());
            pool.worker_up(1, Peer::Unix("a".into()), sync());
            let running = pool.acquire(&[], &job()).await.unwrap();
            let ahead = pool.acquire(&[], &job()).await.unwrap();
            assert_eq!(ahead.turn(), Turn::Waiting);
            assert_eq!(
                pool.acquire(&[], &job()).await.err(),
                Some(Refused::QueueFull),
                "a second place ahead is free, but the queue's one place is taken"
            );
            drop((running, ahead));
        });
    }

    #[test]
    fn a_freed_worker_serves_its_own_thread_first_unless_the_head_was_passed_over_enough() {
        let pool = Pool::new(10, Duration::from_secs(5), Default::default());
        let here = std::thread::current().id();
        let other = std::thread::spawn(|| std::thread::current().id())
            .join()
            .unwrap();
        let waiter = |ticket, thread, passed| Waiter {
            ticket,
            tx: oneshot::channel().0,
            job: job(),
            thread,
            passed,
            avoid: vec![],
        };
        let fresh = 0;
        let mut inner = pool.lock();
        let mut next = |queue: Vec<Waiter>, fits: fn(&Waiter) -> bool| {
            inner.waiters = queue.into();
            inner.next_waiter(fits).map(|w| w.ticket)
        };
        let any: fn(&Waiter) -> bool = |_| true;
        // The head just came: this thread's request, third, goes first.
        let queue = vec![
            waiter(1, other, fresh),
            waiter(2, other, fresh),
            waiter(3, here, fresh),
        ];
        assert_eq!(next(queue, any), Some(3));
        // Unless it cannot take the place offered.
        let queue = vec![waiter(1, other, fresh), waiter(2, here, fresh)];
        assert_eq!(next(queue, |w| w.ticket != 2), Some(1));
        // Past the window, the head.
        let mut queue: Vec<Waiter> = (1..=SAME_THREAD_WINDOW as u64)
            .map(|t| waiter(t, other, fresh))
            .collect();
        queue.push(waiter(9, here, fresh));
        assert_eq!(next(queue, any), Some(1));
        // One passed over enough times is not passed again, as head or not.
        let queue = vec![waiter(1, other, SAME_THREAD_PASSES), waiter(2, here, fresh)];
        assert_eq!(next(queue, any), Some(1));
        let queue = vec![
            waiter(1, other, fresh),
            waiter(2, other, SAME_THREAD_PASSES),
            waiter(3, here, fresh),
        ];
        assert_eq!(next(queue, any), Some(1));
        // One that may not go to this worker (it just failed there) waits
        // for another; the next that may is served.
        let queue = vec![waiter(1, here, fresh), waiter(2, other, fresh)];
        assert_eq!(next(queue, |w| w.ticket != 1), Some(2));
        // Passing counts: a steady stream of this thread's requests
        // overtakes the other thread's head that many times, then not.
        inner.waiters = std::iter::once(waiter(0, other, fresh))
            .chain((1..=20).map(|t| waiter(t, here, fresh)))
            .collect();
        let order: Vec<u64> = std::iter::from_fn(|| inner.next_waiter(any).map(|w| w.ticket))
            .take(SAME_THREAD_PASSES + 2)
            .collect();
        let passes = SAME_THREAD_PASSES as u64;
        let expected: Vec<u64> = (1..=passes).chain([0, passes + 1]).collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn a_request_that_failed_on_a_worker_is_not_queued_back_to_it() {
        rt().block_on(async {
            let pool = Pool::new(10, Duration::from_secs(5), Default::default());
            pool.worker_up(1, Peer::Unix("a".into()), sync());
            pool.worker_up(2, Peer::Unix("b".into()), sync());
            let on_1 = pool.acquire(&[], &job()).await.unwrap();
            let on_2 = pool.acquire(&[], &job()).await.unwrap();
            let ahead = take_all(&pool, 2 * AHEAD_DEPTH).await;
            // It failed on worker 2 and waits, avoiding it.
            let p = pool.clone();
            let avoid = [on_2.worker];
            let retry = tokio::spawn(async move { p.acquire(&avoid, &job()).await });
            tokio::task::yield_now().await;
            let worker_2 = on_2.worker;
            drop(on_2);
            tokio::task::yield_now().await;
            assert!(!retry.is_finished(), "given worker {worker_2} again");
            drop((on_1, ahead));
            let lease = retry.await.unwrap().unwrap();
            assert_ne!(lease.worker, worker_2);
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
