//! An HTTP/1.1 WebSocket after its 101 (`tunnel.rs`). pingora hands the
//! client's connection over (the vendored `hand_over_upgraded`), the
//! request ends, and the connection's own task (`conn::accept`) moves the
//! bytes from here on. So an idle socket holds its two streams and this
//! small state, not pingora's request future, its session and corral's
//! request future, tens of KiB that a socket would keep for hours.
//!
//! It keeps what the request held: its place in flight (a drain waits for
//! it), the worker's lease, the gauge of open WebSockets, and its access
//! log line, written when it closes with the bytes it sent, as nginx does.

use crate::edge::access_log::{self, Outcome};
use crate::edge::app::peer::Stream as WorkerStream;
use crate::edge::app::pool::{Conn, Lease};
use crate::edge::app::tunnel::{last_words, Ending};
use crate::edge::metrics::{self, Kind, Metrics};
use crate::edge::state::InFlight;
use bytes::Bytes;
use pingora_core::protocols::Stream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::debug;

/// How much is moved at once, either way. The buffer lives only for one
/// read and its write: an idle tunnel holds none.
const CHUNK: usize = 16 * 1024;

/// How long closing the client's side may take (a TLS close_notify to a
/// client that no longer reads).
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// A WebSocket handed over by its request, until its connection's task
/// takes it: by the connection's id, which is its socket's fd.
#[derive(Default)]
pub struct Handovers(Mutex<HashMap<i32, HandedOver>>);

impl Handovers {
    pub fn put(&self, id: i32, tunnel: HandedOver) {
        self.lock().insert(id, tunnel);
    }

    pub fn take(&self, id: i32) -> Option<HandedOver> {
        self.lock().remove(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, HandedOver>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Everything a tunnel needs once its request is gone.
pub struct HandedOver {
    pub client: Stream,
    /// Client bytes read with the request head (a client that did not wait
    /// for the 101).
    pub early: Bytes,
    pub worker: Conn,
    pub ending: watch::Receiver<bool>,
    pub held: Held,
    pub log: Closing,
}

/// What the tunnel keeps only so that it lets go when it ends.
pub struct Held {
    pub lease: Lease,
    pub open: metrics::Open,
    pub in_flight: Option<InFlight>,
}

/// Its access log line and metrics, written when it closes.
pub struct Closing {
    pub request: Option<access_log::Request>,
    pub status: u16,
    pub started: Instant,
    pub kind: Kind,
    pub metrics: Arc<Metrics>,
    pub log: access_log::Log,
}

/// One step of the tunnel.
enum Step {
    FromClient,
    FromWorker,
    Ending,
    Closed(&'static str),
}

impl HandedOver {
    /// Moves bytes both ways until one side closes, then logs it.
    pub async fn run(self) {
        let HandedOver {
            mut client,
            early,
            worker,
            ending,
            held,
            log,
        } = self;
        let mut sent = 0;
        let why = pump(&mut client, early, worker, ending, &mut sent).await;
        debug!("websocket closed: {why}");
        drop(held); // the worker's slot and the gauge, before the close below
        let _ = tokio::time::timeout(CLOSE_WITHIN, client.shutdown()).await;
        log.write(sent);
    }
}

impl Closing {
    fn write(self, sent: usize) {
        let took = self.started.elapsed();
        self.metrics
            .answered(self.kind, self.status, took, sent as u64);
        if let Some(request) = &self.request {
            self.log.log(&request.entry(Outcome {
                status: self.status,
                bytes: sent,
                duration: took,
                complete: true,
                work: None,
            }));
        }
    }
}

/// The tunnel itself. When the edge stops, the worker's side is
/// half-closed: the worker hears it as "going away", sends the client a
/// 1001 close and ends the socket.
async fn pump(
    client: &mut Stream,
    early: Bytes,
    worker: Conn,
    ending: watch::Receiver<bool>,
    sent: &mut usize,
) -> &'static str {
    // Frames the worker sent right behind its 101 are already buffered.
    let from_worker = Bytes::copy_from_slice(worker.buffer());
    let mut worker = worker.into_inner();
    if !early.is_empty() && worker.write_all(&early).await.is_err() {
        return WORKER_GONE;
    }
    if !from_worker.is_empty() {
        if to_client(client, &from_worker).await.is_err() {
            return "the client went away";
        }
        *sent += from_worker.len();
    }
    let mut ending = Ending(Some(ending));
    let why = loop {
        let step = tokio::select! {
            () = ending.asked() => Step::Ending,
            // (a peek into nothing waits for bytes without a buffer)
            r = client.try_peek(&mut []) => match r {
                Ok(true) => Step::FromClient,
                Ok(false) => Step::Closed("the client closed it"),
                Err(_) => Step::Closed("the client's connection failed"),
            },
            r = worker.readable() => match r {
                Ok(()) => Step::FromWorker,
                Err(_) => Step::Closed("the worker's connection failed"),
            },
        };
        let moved = match step {
            Step::FromClient => client_to_worker(client, &mut worker).await,
            Step::FromWorker => worker_to_client(&mut worker, client, sent).await,
            Step::Ending => {
                let _ = worker.shutdown().await;
                Ok(())
            }
            Step::Closed(why) => Err(why),
        };
        if let Err(why) = moved {
            break why;
        }
    };
    if why == WORKER_GONE {
        // It closed before taking all the client sent (a message over
        // `max_message`): what it said last, its close frame, still goes.
        let said = last_words(&worker).await;
        if !said.is_empty() && to_client(client, &said).await.is_ok() {
            *sent += said.len();
        }
    }
    why
}

const WORKER_GONE: &str = "the worker went away";

async fn client_to_worker(
    client: &mut Stream,
    worker: &mut WorkerStream,
) -> Result<(), &'static str> {
    let mut buf = vec![0u8; CHUNK];
    // The client closing drops the worker's connection, which tells the
    // app (1006 unless a close frame came first).
    match client.read(&mut buf).await {
        Ok(0) => Err("the client closed it"),
        Ok(n) => worker.write_all(&buf[..n]).await.map_err(|_| WORKER_GONE),
        Err(_) => Err("the client's connection failed"),
    }
}

async fn worker_to_client(
    worker: &mut WorkerStream,
    client: &mut Stream,
    sent: &mut usize,
) -> Result<(), &'static str> {
    let mut buf = vec![0u8; CHUNK];
    match worker.try_read(&mut buf) {
        Ok(0) => Err("the worker closed it"),
        Ok(n) => {
            to_client(client, &buf[..n])
                .await
                .map_err(|_| "the client went away")?;
            *sent += n;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(_) => Err("the worker's connection failed"),
    }
}

async fn to_client(client: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}
