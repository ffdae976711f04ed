//! A request sent ahead to a busy worker (`pool.rs`, "Ahead"): waiting for
//! its turn, and taking it back (`wire::withdraw`) when a free worker's
//! lease comes for it or the queue's time limit passes first.

use crate::edge::app::peer::Peer;
use crate::edge::app::pool::{Conn, Lease, Turn};
use crate::wire::withdraw::{self, WITHDRAWN};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::debug;

/// How a wait ahead ended.
pub(super) enum Turned {
    /// Its answer is coming on its connection: it runs, or ran.
    Reached,
    /// Taken back unrun: run it on this free worker instead, or (`None`)
    /// the queue's time limit passed.
    Withdrawn(Option<Lease>),
}

/// What woke the wait.
enum Woke {
    Answer,
    Rescue(Option<Lease>),
    QueueTimeout,
}

/// How long a cancel may take: the worker's cancel thread answers at once
/// unless the worker is gone.
const CANCEL_WITHIN: Duration = Duration::from_secs(1);

/// Waits for the worker to answer the `nth` request written on `conn`.
pub(super) async fn wait_turn(
    lease: &Lease,
    conn: &Conn,
    nth: u64,
    mut rescue: oneshot::Receiver<Lease>,
) -> Turned {
    let give_up = tokio::time::sleep_until(lease.queue_deadline().into());
    tokio::pin!(give_up);
    let (mut rescue_open, mut timing) = (true, true);
    loop {
        let woke = tokio::select! {
            biased;
            _ = conn.get_ref().readable() => Woke::Answer,
            r = &mut rescue, if rescue_open => Woke::Rescue(r.ok()),
            () = &mut give_up, if timing => Woke::QueueTimeout,
        };
        match woke {
            Woke::Answer => return Turned::Reached,
            Woke::Rescue(free) => {
                rescue_open = false;
                if let Some(free) = free {
                    if take_back(lease, conn, nth).await {
                        return Turned::Withdrawn(Some(free));
                    }
                }
            }
            Woke::QueueTimeout => {
                timing = false;
                if lease.turn() == Turn::Waiting && take_back(lease, conn, nth).await {
                    return Turned::Withdrawn(None);
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
