//! The worker's socket front and its Python thread.
//!
//! ```text
//! acceptor thread ──> one thread per edge connection: read a whole request
//!                        │  (body spooled), hand it over as a Job, wait
//!                        ▼
//!                  job channel ──> Python thread: run the app, write the
//!                                  response (GIL released while writing)
//! ```
//!
//! A slow or stalled peer only ever blocks a connection thread, never the
//! thread holding the interpreter. The edge sends a worker one request at a
//! time, so the channel rarely holds more than one job.

use super::recycle::Recycle;
use super::request::{read_request, ReadError, Request};
use super::wsgi::Wsgi;
use pyo3::prelude::*;
use std::io::{BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// Set by SIGTERM: finish what is in flight, then exit.
pub static STOPPING: AtomicBool = AtomicBool::new(false);
/// Requests read and not yet answered.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// After the last request, how long a stopping worker waits before exiting,
/// covering a request the edge dispatched just before it heard "down".
const DRAIN_QUIET: Duration = Duration::from_millis(300);

struct Job {
    req: Request,
    stream: UnixStream,
    done: SyncSender<bool>,
}

/// Serves until stopped. With `threads > 1` that many Python threads take
/// jobs (the GIL is released during every socket write and wait), and the
/// edge sends this worker up to `threads` requests at once.
pub fn serve(
    py: Python<'_>,
    wsgi: Wsgi,
    listener: UnixListener,
    threads: usize,
    recycle: Recycle,
) -> i32 {
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(64);
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(listener, jobs_tx))
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!("cannot start the accept thread: {e}"));
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let shared = Arc::new((wsgi, recycle));
    for i in 1..threads {
        let jobs = jobs_rx.clone();
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("python-{i}"))
            .spawn(move || Python::attach(|py| python_loop(py, &shared.0, &shared.1, &jobs)));
        if let Err(e) = spawned {
            tracing::error!("cannot start Python thread {i}: {e}");
        }
    }
    python_loop(py, &shared.0, &shared.1, &jobs_rx);
    0
}

fn python_loop(py: Python<'_>, wsgi: &Wsgi, recycle: &Recycle, jobs: &Arc<Mutex<Receiver<Job>>>) {
    let mut quiet_since: Option<Instant> = None;
    loop {
        let next = py.detach(|| {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv_timeout(Duration::from_millis(100))
        });
        match next {
            Ok(job) => {
                quiet_since = None;
                let keep_alive = wsgi.handle(py, job.req, job.stream);
                let _ = job.done.send(keep_alive);
                recycle.after_request();
            }
            Err(RecvTimeoutError::Timeout) => {
                recycle.tick();
                if STOPPING.load(Ordering::SeqCst) && IN_FLIGHT.load(Ordering::SeqCst) == 0 {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= DRAIN_QUIET {
                        info!("worker {} drained, exiting", std::process::id());
                        return;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn accept_loop(listener: UnixListener, jobs: SyncSender<Job>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let jobs = jobs.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(256 * 1024)
            .spawn(move || connection(conn, jobs));
        if let Err(e) = spawned {
            tracing::error!("cannot start a connection thread: {e}");
        }
    }
}

fn connection(stream: UnixStream, jobs: SyncSender<Job>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    loop {
        match read_request(&mut reader) {
            Ok(req) => {
                IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
                let (done_tx, done_rx) = mpsc::sync_channel(1);
                let keep_alive = match stream.try_clone() {
                    Ok(s) => {
                        let job = Job {
                            req,
                            stream: s,
                            done: done_tx,
                        };
                        jobs.send(job).is_ok() && done_rx.recv().unwrap_or(false)
                    }
                    Err(_) => false,
                };
                IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
                if !keep_alive {
                    break;
                }
            }
            Err(ReadError::Closed) => break,
            Err(ReadError::Bad(status, why)) => {
                debug!("bad request from the edge: {why}");
                let reason = if status == 431 {
                    "Request Header Fields Too Large"
                } else {
                    "Bad Request"
                };
                let _ = (&stream).write_all(
                    format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
                );
                break;
            }
            Err(ReadError::Io(e)) => {
                debug!("connection from the edge failed: {e}");
                break;
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
