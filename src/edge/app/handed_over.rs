//! A WebSocket after its handshake (`tunnel.rs`). pingora hands the client
//! side over (the vendored `hand_over_upgraded` and `hand_over_h2`) and the
//! request ends. An HTTP/1.1 socket then runs in its connection's own task
//! (`conn::accept`), an HTTP/2 one (RFC 8441) in a task of its own beside
//! the connection's other streams. So an idle socket holds its two ends
//! and this small state, not pingora's request future, its session and
//! corral's request future, tens of KiB that a socket would keep for hours.
//!
//! It keeps what the request held: its place in flight (a drain waits for
//! it), the worker's lease, the gauge of open WebSockets, and its access
//! log line, written when it closes with the bytes it sent, as nginx does.
//! The worker parses the frames; the tunnel only moves bytes, one write at
//! a time each way (back-pressure), and holds no buffer while idle.

use crate::edge::access_log::{self, Outcome};
use crate::edge::app::peer::Stream as WorkerStream;
use crate::edge::app::pool::{Conn, Lease};
use crate::edge::metrics::{self, Kind, Metrics};
use crate::edge::state::InFlight;
use bytes::Bytes;
use pingora_core::protocols::http::v2::server::HttpSession as H2Stream;
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

/// How long closing the client's side may take (a TLS close_notify, or an
/// h2 END_STREAM, to a client that no longer reads).
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

/// The client's side of a tunnel.
pub enum Client {
    /// An HTTP/1.1 connection (plain or TLS) after its 101.
    Raw(Stream),
    /// An HTTP/2 stream after its 200.
    H2(Box<H2Stream>),
}

impl Client {
    /// The client's next bytes; None when it closed.
    async fn next(&mut self) -> Result<Option<Bytes>, ()> {
        match self {
            Client::Raw(s) => {
                // A peek into nothing waits for bytes without a buffer.
                if !s.try_peek(&mut []).await.map_err(|_| ())? {
                    return Ok(None);
                }
                let mut buf = vec![0u8; CHUNK];
                let n = s.read(&mut buf).await.map_err(|_| ())?;
                buf.truncate(n);
                Ok((n > 0).then(|| buf.into()))
            }
            Client::H2(s) => s.read_body_bytes().await.map_err(|_| ()),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ()> {
        match self {
            Client::Raw(s) => {
                s.write_all(bytes).await.map_err(|_| ())?;
                s.flush().await.map_err(|_| ())
            }
            // Boxed, as the rare steps below: a large future inline would
            // size every tunnel's state, idle or not (`conn::accept`).
            Client::H2(s) => Box::pin(s.write_body(Bytes::copy_from_slice(bytes), false))
                .await
                .map_err(|_| ()),
        }
    }

    async fn close(&mut self) {
        let closing = async {
            match self {
                Client::Raw(s) => {
                    let _ = s.shutdown().await;
                }
                Client::H2(s) => {
                    let _ = s.write_body(Bytes::new(), true).await;
                    // The client ends its half in answer (RFC 8441 §5);
                    // a stream let go before that is reset (RST_STREAM
                    // NO_ERROR, RFC 9113 §8.1), which Chromium reports
                    // as 1006 even after a clean close handshake.
                    while let Ok(Some(_)) = s.read_body_bytes().await {}
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_WITHIN, closing).await;
    }
}

/// Everything a tunnel needs once its request is gone.
pub struct HandedOver {
    pub client: Client,
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
    FromClient(Result<Option<Bytes>, ()>),
    FromWorker,
    Ending,
    Closed(&'static str),
}

impl HandedOver {
    /// The HTTP/1.1 connection's id (its socket's fd), for its task to
    /// find the tunnel by; None for an HTTP/2 stream.
    pub fn connection_id(&self) -> Option<i32> {
        match &self.client {
            Client::Raw(s) => Some(s.id()),
            Client::H2(_) => None,
        }
    }

    /// Moves bytes both ways until one side closes, then logs it.
    pub fn run(self) -> impl std::future::Future<Output = ()> + Send {
        let HandedOver {
            client,
            early,
            worker,
            ending,
            held,
            log,
        } = self;
        // Frames the worker sent right behind its 101 are already buffered.
        let from_worker = Bytes::copy_from_slice(worker.buffer());
        let tunnel = Tunnel {
            client,
            worker: worker.into_inner(),
            ending: Ending(Some(ending)),
            sent: 0,
        };
        // Not an `async fn` taking `self`: its future would keep `self` and
        // the fields taken out of it side by side, the whole tunnel's life.
        tunnel.run(early, from_worker, held, log)
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

/// A tunnel while it runs: its two ends, and what it has sent the client.
struct Tunnel {
    client: Client,
    worker: WorkerStream,
    ending: Ending,
    sent: usize,
}

impl Tunnel {
    async fn run(mut self, early: Bytes, from_worker: Bytes, held: Held, log: Closing) {
        let why = self.pump(early, from_worker).await;
        debug!("websocket closed: {why}");
        drop(held); // the worker's slot and the gauge, before the close below
        Box::pin(self.client.close()).await;
        log.write(self.sent);
    }

    /// The tunnel itself. When the edge stops, the worker's side is
    /// half-closed: the worker hears it as "going away", sends the client
    /// a 1001 close and ends the socket.
    async fn pump(&mut self, early: Bytes, from_worker: Bytes) -> &'static str {
        if !early.is_empty() && self.worker.write_all(&early).await.is_err() {
            return WORKER_GONE;
        }
        if !from_worker.is_empty() {
            if self.client.send(&from_worker).await.is_err() {
                return "the client went away";
            }
            self.sent += from_worker.len();
        }
        let why = loop {
            let step = tokio::select! {
                () = self.ending.asked() => Step::Ending,
                r = self.client.next() => Step::FromClient(r),
                r = self.worker.readable() => match r {
                    Ok(()) => Step::FromWorker,
                    Err(_) => Step::Closed("the worker's connection failed"),
                },
            };
            if let Err(why) = self.act(step).await {
                break why;
            }
        };
        match why {
            // It closed before taking all the client sent (a message over
            // `max_message`): what it said last, its close frame, still goes.
            WORKER_GONE => self.pass_on_last_words(LAST_WORDS_GONE).await,
            // The client ended its half, maybe right behind a close frame
            // (an h2 END_STREAM on the frame): the worker hears the end
            // and answers with its own close frame, which still goes.
            CLIENT_DONE => {
                let _ = self.worker.shutdown().await;
                self.pass_on_last_words(CLOSE_WITHIN).await;
            }
            _ => {}
        }
        why
    }

    async fn pass_on_last_words(&mut self, within: Duration) {
        let said = Box::pin(last_words(&self.worker, within)).await;
        if !said.is_empty() && self.client.send(&said).await.is_ok() {
            self.sent += said.len();
        }
    }

    /// Moves what one step brought; Err ends the tunnel, saying why.
    async fn act(&mut self, step: Step) -> Result<(), &'static str> {
        match step {
            Step::FromClient(Ok(Some(bytes))) => {
                self.worker.write_all(&bytes).await.map_err(|_| WORKER_GONE)
            }
            // The client closing ends the worker's connection, which
            // tells the app (1006 unless a close frame came first).
            Step::FromClient(Ok(None)) => Err(CLIENT_DONE),
            Step::FromClient(Err(())) => Err("the client's connection failed"),
            Step::FromWorker => self.worker_to_client().await,
            Step::Ending => {
                let _ = self.worker.shutdown().await;
                Ok(())
            }
            Step::Closed(why) => Err(why),
        }
    }

    async fn worker_to_client(&mut self) -> Result<(), &'static str> {
        let mut buf = vec![0u8; CHUNK];
        match self.worker.try_read(&mut buf) {
            Ok(0) => Err("the worker closed it"),
            Ok(n) => {
                self.client
                    .send(&buf[..n])
                    .await
                    .map_err(|_| "the client went away")?;
                self.sent += n;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err("the worker's connection failed"),
        }
    }
}

const WORKER_GONE: &str = "the worker went away";
const CLIENT_DONE: &str = "the client closed it";

/// How long a worker that closed may take with each piece of what it
/// still had to say.
const LAST_WORDS_GONE: Duration = Duration::from_millis(200);

/// The edge asking its tunnels to end (`EdgeState::tunnels_ending`).
struct Ending(Option<watch::Receiver<bool>>);

impl Ending {
    /// Resolves once, when the edge asks; after that (or if it never
    /// will: the edge's state is gone) it stays pending.
    async fn asked(&mut self) {
        if let Some(rx) = &mut self.0 {
            let asked = rx.wait_for(|end| *end).await.is_ok();
            self.0 = None;
            if asked {
                return;
            }
        }
        std::future::pending().await
    }
}

/// What a worker still had to say at the end, its close frame above all,
/// read from its connection (at most 64 KiB, waiting at most `within` for
/// each piece).
async fn last_words(worker: &WorkerStream, within: Duration) -> Vec<u8> {
    let mut said = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    while said.len() < 64 * 1024 {
        if !matches!(
            tokio::time::timeout(within, worker.readable()).await,
            Ok(Ok(()))
        ) {
            break;
        }
        match worker.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    said
}
