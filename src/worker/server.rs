//! The worker's socket front and where Python runs.
//!
//! `threads = 1` (the default) is served by `in_turn.rs`: one thread, every
//! edge connection in turn. Above that:
//!
//! ```text
//! main thread: accept loop (GIL released), checks stop/recycle every 100 ms
//!   └─ one thread per edge connection:
//!        read a whole request, body spooled  (GIL released)
//!        take an app slot (`threads` of them) (GIL released)
//!        run the app, write the response     (GIL held; released on writes)
//! ```
//!
//! Each connection thread stays attached to the interpreter for its life
//! (one Python thread state, reused), and lets go of the GIL whenever it
//! blocks. Running the app on the thread that read the request avoids a
//! hand-off per request. `threads` bounds how many requests run Python at
//! once; the edge never sends more than that, so the bound is a backstop.
//! A slow peer only ever blocks its own connection thread without the GIL.

use super::link::{Link, Next};
use super::recycle::Recycle;
use super::request::Request;
use pyo3::prelude::*;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::info;

/// Set by SIGTERM: finish what is in flight, then exit.
pub static STOPPING: AtomicBool = AtomicBool::new(false);
/// Requests read and not yet answered.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// After the last request, how long a stopping worker waits before exiting,
/// covering a request the edge dispatched just before it heard "down".
const DRAIN_QUIET: Duration = Duration::from_millis(300);

/// What a worker serves: a request in, its response written to the edge's
/// stream; false when the connection must close. WSGI today
/// (`wsgi::Wsgi`); an ASGI app plugs in here too.
pub trait App: Send + Sync {
    fn handle(&self, py: Python<'_>, req: Request, stream: Arc<UnixStream>) -> bool;
}

/// What every connection thread shares.
struct Shared {
    app: Box<dyn App>,
    recycle: Recycle,
    slots: Slots,
}

/// A counting semaphore: how many requests may run app code at once.
struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
}

struct SlotState {
    free: usize,
    /// Threads waiting for a slot. std's `notify_one` makes a system call
    /// whether or not anyone waits, and nobody does unless the edge sent
    /// more than `threads` requests: so it is called only when someone does.
    waiting: usize,
}

impl Slots {
    fn new(n: usize) -> Self {
        Slots {
            state: Mutex::new(SlotState {
                free: n,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// Takes a slot if one is free right now.
    fn try_acquire(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.free == 0 {
            return false;
        }
        s.free -= 1;
        true
    }

    fn acquire(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.free == 0 {
            s.waiting += 1;
            s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
            s.waiting -= 1;
        }
        s.free -= 1;
    }

    fn release(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.free += 1;
        let wake = s.waiting > 0;
        drop(s);
        if wake {
            self.freed.notify_one();
        }
    }
}

/// Serves until stopped; returns the exit code.
pub fn serve(
    py: Python<'_>,
    app: Box<dyn App>,
    listener: UnixListener,
    socket: &std::path::Path,
    threads: usize,
    recycle: Recycle,
) -> i32 {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!("worker cannot poll its socket: {e}");
        return 70;
    }
    if threads <= 1 {
        return super::in_turn::serve(py, app.as_ref(), &listener, socket, &recycle);
    }
    let shared = Arc::new(Shared {
        app,
        recycle,
        slots: Slots::new(threads),
    });
    py.detach(|| accept_loop(&listener, &shared));
    0
}

/// When a stopping worker may exit: nothing in flight for `DRAIN_QUIET`.
#[derive(Default)]
pub(super) struct Drain {
    quiet_since: Option<Instant>,
}

impl Drain {
    /// Called at least every 100 ms.
    pub(super) fn done(&mut self) -> bool {
        if !STOPPING.load(Ordering::SeqCst) || in_flight() > 0 {
            self.quiet_since = None;
            return false;
        }
        let since = *self.quiet_since.get_or_insert_with(Instant::now);
        if since.elapsed() < DRAIN_QUIET {
            return false;
        }
        info!("worker {} drained, exiting", std::process::id());
        true
    }
}

/// Marks a request as running until dropped (what `Drain` waits for).
pub(super) struct Running;

impl Running {
    pub(super) fn start() -> Running {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::SeqCst)
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut drain = Drain::default();
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        // Until WouldBlock: nothing more to accept.
        while let Ok((conn, _)) = listener.accept() {
            let _ = conn.set_nonblocking(false);
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("conn".into())
                .spawn(move || Python::attach(|py| connection(py, conn, &shared)));
            if let Err(e) = spawned {
                tracing::error!("cannot start a connection thread: {e}");
            }
        }
        shared.recycle.tick();
        if drain.done() {
            return;
        }
    }
}

fn connection(py: Python<'_>, stream: UnixStream, shared: &Shared) {
    let Ok(mut link) = Link::new(stream, None) else {
        return;
    };
    while let Next::Run(req) = py.detach(|| link.next(true, false)) {
        let running = Running::start();
        // Waiting for a slot lets go of the GIL; taking a free one
        // does not need to.
        if !shared.slots.try_acquire() {
            py.detach(|| shared.slots.acquire());
        }
        let keep_alive = shared.app.handle(py, req, link.stream().clone());
        shared.slots.release();
        drop(running);
        shared.recycle.after_request();
        if !keep_alive {
            break;
        }
    }
    link.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_concurrency_and_wake_every_waiter() {
        let slots = Arc::new(Slots::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        if !slots.try_acquire() {
                            slots.acquire();
                        }
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        running.fetch_sub(1, Ordering::SeqCst);
                        slots.release();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 2, "more than 2 ran at once");
        let s = slots.state.lock().unwrap();
        assert_eq!((s.free, s.waiting), (2, 0));
    }
}
