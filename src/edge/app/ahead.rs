//! A request sent ahead to a busy worker (`pool.rs`, "Ahead"): waiting for
//! its turn, and taking it back (`wire::withdraw`) when a free worker's
//! lease comes for it or the queue's time limit passes first.

use crate::edge::app::peer::Peer;
use crate::edge::app::pool::{Conn, Lease, Rescue, Turn};
use crate::wire::withdraw::{self, WITHDRAWN};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::debug;

/// How a wait ahead ended.
pub(super) enum Turned {
    /// Its answer is coming on its connection: it runs, or ran.
    Reached,
    /// Taken back unrun; what to do with it instead.
    Withdrawn(Back),
}

/// A request taken back unrun goes:
pub(super) enum Back {
    /// to this free worker;
    Run(Lease),
    /// to the head of the queue (it waited past its patience);
    Requeue,
    /// nowhere: the queue's time limit passed (503).
    QueueTimeout,
}

/// What woke the wait.
enum Woke {
    Answer,
    Rescue(Option<Rescue>),
    QueueTimeout,
}

/// How long the edge waits for a cancel's answer (one thread answers them
/// in turn). Past it the request counts as running; if the worker skips it
/// after all, it says so on the request's own link (`~withdrawn`), and the
/// request is sent elsewhere then.
const CANCEL_WITHIN: Duration = Duration::from_secs(1);

/// How long a request sent ahead waits for the one before it to be
/// written. That takes microseconds, or a connect for a new connection;
/// past this something is wrong with the other, and a recall settles the
/// order if they cross (`Pool::recall_overdue`).
const PREVIOUS_WITHIN: Duration = Duration::from_secs(1);

/// Waits until the request granted before this one on the same worker is
/// written (`pool::Order`), or has failed or given up (its sender dropped).
pub(super) async fn after_previous(previous: oneshot::Receiver<()>) {
    let _ = tokio::time::timeout(PREVIOUS_WITHIN, previous).await;
}

/// Waits for the worker to answer the `nth` request written on `conn`.
pub(super) async fn wait_turn(
    lease: &Lease,
    conn: &Conn,
    nth: u64,
    mut rescue: oneshot::Receiver<Rescue>,
) -> Turned {
    let give_up = tokio::time::sleep_until(lease.queue_deadline().into());
    tokio::pin!(give_up);
    // A running request's place is not the queue's to time.
    let (mut rescue_open, mut timing) = (true, lease.sent_ahead());
    loop {
        let woke = tokio::select! {
            biased;
            _ = conn.get_ref().readable() => Woke::Answer,
            r = &mut rescue, if rescue_open => Woke::Rescue(r.ok()),
            () = &mut give_up, if timing => Woke::QueueTimeout,
        };
        match woke {
            Woke::Answer => return Turned::Reached,
            Woke::Rescue(word) => {
                rescue_open = false;
                let back = match word {
                    Some(Rescue::Here(free)) => Back::Run(free),
                    Some(Rescue::Requeue) => Back::Requeue,
                    None => continue,
                };
                if take_back(lease, conn, nth).await {
                    return Turned::Withdrawn(back);
                }
            }
            Woke::QueueTimeout => {
                timing = false;
                if lease.turn() == Turn::Waiting && take_back(lease, conn, nth).await {
                    return Turned::Withdrawn(Back::QueueTimeout);
                }
            }
        }
    }
}

/// Asks the worker for the request back; true when it will not run it.
/// Any failure counts as "it runs": the answer is then awaited as usual.
async fn take_back(lease: &Lease, conn: &Conn, nth: u64) -> bool {
    let (Peer::Unix(socket), Some(link)) = (&lease.peer, conn.get_ref().link_id()) else {
        return false;
    };
    let ask = async {
        let path = withdraw::control_path(socket);
        let mut control = tokio::net::UnixStream::connect(path).await?;
        control.write_all(&withdraw::cancel_line(link, nth)).await?;
        let mut answer = Vec::with_capacity(withdraw::MAX_LINE);
        control
            .take(withdraw::MAX_LINE as u64)
            .read_to_end(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(answer == WITHDRAWN)
    };
    match tokio::time::timeout(CANCEL_WITHIN, ask).await {
        Ok(Ok(withdrawn)) => withdrawn,
        Ok(Err(e)) => {
            debug!("worker {}: cannot take a request back: {e}", lease.worker);
            false
        }
        Err(_) => false,
    }
}
