//! The shortcut: an HTTP/1 request that repeats one the full path answered
//! from a cached file (`files::replay` says when that is so) is answered
//! here, from the guard's checked bytes, without pingora's session. Its
//! answer is the same prepared head and body `reply::prepared` wrote, with
//! what `reply::every` adds; it is counted and logged as a static answer.
//!
//! Everything else, and any request the first time, takes the full path
//! (`proxy.rs`).

use crate::edge::access_log::Entry as LogEntry;
use crate::edge::conn::accept::Shared;
use crate::edge::conn::guard::Guarded;
use crate::edge::files::cache::Entry;
use crate::edge::files::replay;
use crate::edge::metrics::Kind;
use crate::edge::reply;
use crate::edge::request::Ctx;
use pingora_core::protocols::http::v1::server::write_prepared;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// What became of the request waiting in the guard.
pub enum Taken {
    /// Not one to answer here: the full path reads it.
    No,
    /// Answered; the connection waits for its next request.
    Answered,
    /// Answered (or the client left): the connection is over.
    Closed,
}

/// A repeated request found at the front of the guard's bytes.
pub struct Repeat {
    /// Its head's length.
    len: usize,
    head_only: bool,
    entry: Arc<Entry>,
    /// What the access log says of it, when there is a log.
    logged: Option<Logged>,
}

struct Logged {
    target: String,
    referer: String,
    user_agent: String,
}

/// Answers `repeat`, found by `find` at the front of `guarded`'s checked
/// bytes; `tls`: the connection's. Awaited boxed by the caller: its state
/// (the write's slices, the request's context) would otherwise size every
/// HTTP/1 connection's task, idle ones included.
pub async fn answer(guarded: &mut Guarded, shared: &Shared, tls: bool, repeat: Repeat) -> Taken {
    let Some((_, head)) = repeat.entry.head.get() else {
        return Taken::No; // `recall` gives only entries with one
    };
    guarded.take_checked(repeat.len);
    shared.state.files_cache.count_hit();
    let ctx = Ctx::new(&shared.state);
    let every = reply::every(&shared.state, false, tls);
    let id = ctx.request_id.as_bytes();
    let lines = reply::prepared_lines(&head.wire, Some(id), every.hsts);
    let body = if repeat.head_only {
        &[][..]
    } else {
        &repeat.entry.body[..]
    };
    let sent = send(guarded, &lines, !every.closes, body).await;
    account(shared, guarded, &ctx, &repeat, sent, body.len());
    match (sent, every.closes) {
        (Sent::Whole, false) => Taken::Answered,
        (Sent::Whole, true) => {
            let _ = guarded.shutdown().await;
            Taken::Closed
        }
        (Sent::Unflushed | Sent::Not, _) => Taken::Closed,
    }
}

/// The repeated request at the front of `checked`, if it is one.
pub fn find(checked: &[u8], shared: &Shared, tls: bool) -> Option<Repeat> {
    if !replay::worth_a_look(checked, &shared.static_mounts) {
        return None;
    }
    let plain = replay::shape(checked, shared.head_limits.max_headers)?;
    let entry = replay::recall(&plain, tls, &shared.static_mounts)?;
    let lossy = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let logged = shared.state.log.enabled().then(|| Logged {
        target: lossy(plain.target),
        referer: lossy(plain.referer.unwrap_or_default()),
        user_agent: lossy(plain.user_agent.unwrap_or_default()),
    });
    Some(Repeat {
        len: plain.len,
        head_only: plain.head_only,
        entry,
        logged,
    })
}

/// How far an answer got before the client went (or did not).
#[derive(Clone, Copy)]
enum Sent {
    Whole,
    /// Written, but the flush failed: the full path counts such an answer
    /// as its status, with its bytes, incomplete.
    Unflushed,
    /// The write failed: 499, nothing sent (`fail_to_proxy`).
    Not,
}

/// Writes the answer and flushes it.
async fn send(guarded: &mut Guarded, lines: &[&[u8]], keepalive: bool, body: &[u8]) -> Sent {
    let status = http::StatusCode::OK;
    if write_prepared(guarded, status, lines, keepalive, body)
        .await
        .is_err()
    {
        return Sent::Not;
    }
    match guarded.flush().await {
        Ok(()) => Sent::Whole,
        Err(_) => Sent::Unflushed,
    }
}

/// Metrics and the access-log line, as `proxy.rs`'s `logging` makes them
/// (`body`: the body's length).
fn account(
    shared: &Shared,
    guarded: &Guarded,
    ctx: &Ctx,
    repeat: &Repeat,
    sent: Sent,
    body: usize,
) {
    let took = ctx.started.elapsed();
    let (status, bytes) = match sent {
        Sent::Whole | Sent::Unflushed => (200, body),
        Sent::Not => (499, 0),
    };
    shared
        .metrics
        .answered(Kind::Static, status, took, bytes as u64);
    let Some(logged) = &repeat.logged else {
        return;
    };
    shared.state.log.log(&LogEntry {
        client: guarded.client(),
        method: if repeat.head_only { "HEAD" } else { "GET" },
        target: &logged.target,
        protocol: "HTTP/1.1",
        status,
        bytes,
        referer: &logged.referer,
        user_agent: &logged.user_agent,
        duration: took,
        request_id: &ctx.request_id,
        complete: matches!(sent, Sent::Whole),
        work: None,
    });
}
