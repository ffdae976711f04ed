//! `Guarded`: the stream pingora reads every client connection through.
//!
//! It sits between the transport (TCP, or TLS over it) and pingora's HTTP
//! code, and does what pingora's accept path has no hook for:
//! - hands on only bytes that `framing` has checked, so a request pingora
//!   would read leniently is refused first;
//! - answers a refused head itself (400/414/431/505, or 408 when the head
//!   takes longer than `header_timeout`), then closes like nginx: stop
//!   writing, read and drop what the client still sends for a moment, so
//!   the answer is not lost to a TCP reset;
//! - holds the connection's place in `conn_limits` until it is dropped;
//! - buffers small writes until pingora flushes, as pingora's own listener
//!   stream would: a response head and a small body leave in one packet
//!   (and one TLS record), not one each.

use crate::edge::conn::limits::Ticket;
use crate::proto::framing::{Framer, Step};
use async_trait::async_trait;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a refused connection keeps reading (and dropping) before the
/// close, and how much it reads at most.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 << 10;
/// How long an unread upload is read and dropped after its early answer
/// (nginx: lingering_time 30s; uploads here come at LAN speed or they are
/// cut off anyway).
pub(crate) const UPLOAD_LINGER: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 16 << 10;
/// Writes up to this size are gathered until a flush; larger ones go out
/// directly.
const WRITE_BUFFER: usize = 16 << 10;
/// A vectored write whose last part is this large, with nothing buffered
/// before it, goes out at once without copying that part: copying it costs
/// more than a later write would save; smaller answers are kept to go out
/// with what follows (pipelined answers).
const WRITE_DIRECT: usize = 2 << 10;

enum Mode {
    /// Normal operation.
    Serving,
    /// Writing a refusal; then lingering.
    Answering {
        response: Vec<u8>,
        written: usize,
    },
    Lingering {
        read: usize,
    },
    /// Closing with the client's upload unread (nginx's lingering close):
    /// our side is shut once `shut`, then its bytes are read and dropped
    /// until it stops or `UPLOAD_LINGER` passes.
    Discarding {
        shut: bool,
    },
    /// What pingora reads next: nothing, ever again.
    Closed,
    /// A malformed body: every read fails with this.
    Failed(&'static str),
}

pub struct Guarded {
    inner: Stream,
    framer: Framer,
    /// Bytes read from `inner` that pingora has not had yet; the first
    /// `checked` of them are cleared by the framer.
    held: Vec<u8>,
    checked: usize,
    /// After the checked bytes: stop (the framer said so), answer a
    /// refused head, or fail on a malformed body.
    stop_after_checked: bool,
    pending: Option<(u16, &'static str)>,
    bad_body: Option<&'static str>,
    mode: Mode,
    header_timeout: Duration,
    /// Armed while a head is awaited and has started (or, for the first
    /// request, from the accept).
    deadline: Option<Pin<Box<Sleep>>>,
    linger: Option<Pin<Box<Sleep>>>,
    /// Written by pingora, not yet sent; `wsent` of it already went out.
    wbuf: Vec<u8>,
    wsent: usize,
    /// For the access-log line of a refusal.
    client: String,
    /// For the line of a refused request.
    log: crate::edge::access_log::Log,
    _ticket: Ticket,
}

impl Guarded {
    pub fn new(
        inner: Stream,
        framer: Framer,
        header_timeout: Duration,
        accepted: Instant,
        client: String,
        ticket: Ticket,
        log: crate::edge::access_log::Log,
    ) -> Self {
        let deadline = (!framer.is_opaque() && !header_timeout.is_zero())
            .then(|| Box::pin(tokio::time::sleep_until((accepted + header_timeout).into())));
        Guarded {
            inner,
            framer,
            held: Vec::new(),
            checked: 0,
            stop_after_checked: false,
            pending: None,
            bad_body: None,
            mode: Mode::Serving,
            header_timeout,
            deadline,
            linger: None,
            wbuf: Vec::new(),
            wsent: 0,
            client,
            log,
            _ticket: ticket,
        }
    }

    /// A connection refused outright (too many from its address): answer
    /// with `status` before reading anything.
    pub fn refuse_now(&mut self, status: u16, why: &'static str) {
        self.refuse(status, why);
    }

    fn refuse(&mut self, status: u16, why: &'static str) {
        let line = String::from_utf8_lossy(self.framer.request_line()).into_owned();
        let mut parts = line.splitn(3, ' ');
        let (method, target, protocol) = (
            parts.next().unwrap_or("-"),
            parts.next().unwrap_or("-"),
            parts.next().unwrap_or("-"),
        );
        tracing::debug!("refused {} from {}: {why}", status, self.client);
        self.log.log(&crate::edge::access_log::Entry {
            client: &self.client,
            method: if method.is_empty() { "-" } else { method },
            target,
            protocol,
            status,
            bytes: 0,
            referer: "-",
            user_agent: "-",
            duration: Duration::ZERO,
            request_id: "-",
            complete: true,
            work: None,
        });
        self.deadline = None;
        self.mode = Mode::Answering {
            response: crate::edge::reply::before_http(status),
            written: 0,
        };
    }

    /// Runs the framer over held bytes not yet checked.
    fn check_held(&mut self) {
        while self.checked < self.held.len() && !self.stop_after_checked {
            let heads = self.framer.heads();
            match self.framer.step(&self.held[self.checked..]) {
                Step::Pass(n) => {
                    self.apply_version_fix();
                    self.checked += n
                }
                Step::NeedMore => break,
                Step::StopAfter(n) => {
                    self.apply_version_fix();
                    self.checked += n;
                    self.stop_after_checked = true;
                }
                Step::Refuse(status, why) => {
                    // Bytes already checked (earlier pipelined requests)
                    // still go first; the refusal is answered after them
                    // only once pingora asks for more.
                    if self.checked == 0 {
                        self.refuse(status, why);
                    } else {
                        self.held.truncate(self.checked);
                        self.pending = Some((status, why));
                    }
                    break;
                }
                Step::BadBody(why) => {
                    self.held.truncate(self.checked);
                    self.bad_body = Some(why);
                    break;
                }
            }
            if self.framer.heads() != heads {
                // The head is complete: its deadline is over.
                self.deadline = None;
            }
        }
        self.arm_deadline_if_head_started();
    }

    /// A head just passed said HTTP/1.x (x > 1): pingora reads it as 1.1.
    fn apply_version_fix(&mut self) {
        if let Some(at) = self.framer.take_version_fix() {
            self.held[self.checked + at] = b'1';
        }
    }

    /// Copies checked bytes to pingora's buffer.
    fn deliver(&mut self, out: &mut ReadBuf<'_>) -> bool {
        if self.checked == 0 {
            return false;
        }
        let n = self.checked.min(out.remaining());
        out.put_slice(&self.held[..n]);
        self.held.drain(..n);
        self.checked -= n;
        true
    }

    fn arm_deadline_if_head_started(&mut self) {
        if self.deadline.is_none()
            && self.framer.in_head()
            && self.held.len() > self.checked
            && !self.header_timeout.is_zero()
        {
            self.deadline = Some(Box::pin(tokio::time::sleep(self.header_timeout)));
        }
    }

    /// Lingering close: shut our side, then read and drop until the
    /// client closes, errs, or time is up.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Mode::Discarding { shut: false } = self.mode {
            let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
            self.mode = Mode::Discarding { shut: true };
        }
        loop {
            if self
                .linger
                .as_mut()
                .is_none_or(|l| l.as_mut().poll(cx).is_ready())
            {
                break;
            }
            let mut scratch = [0u8; 16 << 10];
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => continue,
                Poll::Ready(_) => break,
            }
        }
        self.mode = Mode::Closed;
        Poll::Ready(Ok(()))
    }

    /// Waiting for the client: give back buffer capacity nothing is in, so
    /// an idle connection costs little beyond its socket.
    fn release_idle_buffers(&mut self) {
        if self.held.is_empty() && self.held.capacity() > 0 {
            self.held = Vec::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
            self.wbuf = Vec::new();
        }
    }

    /// Sends what `wbuf` holds.
    fn poll_send_buffered(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.wsent < self.wbuf.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wsent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.wsent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.wbuf.clear();
        self.wsent = 0;
        Poll::Ready(Ok(()))
    }

    /// Buffers `parts` in one allocation (the buffer is given back whenever
    /// the connection idles, and growing it part by part cost four
    /// reallocations): what was buffered before them and them.
    fn gather(&mut self, parts: &[std::io::IoSlice<'_>]) -> usize {
        self.wbuf.reserve(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            self.wbuf.extend_from_slice(part);
        }
        self.wbuf.len()
    }

    /// A whole answer in one call (`reply::prepared`): its small head parts
    /// gathered here, then head and body in one writev, without copying the
    /// body (each iovec costs the kernel more than copying a small part).
    /// The head counts as written once buffered, so a short or pending
    /// write leaves the rest to the buffered path.
    fn poll_write_head_and_body(
        &mut self,
        cx: &mut Context<'_>,
        head: &[std::io::IoSlice<'_>],
        body: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let buffered = self.gather(head);
        let both = [
            std::io::IoSlice::new(&self.wbuf),
            std::io::IoSlice::new(body),
        ];
        match Pin::new(&mut self.inner).poll_write_vectored(cx, &both) {
            Poll::Ready(Ok(n)) if n >= buffered => {
                self.wbuf.clear();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Ok(n)) => {
                self.wsent = n;
                Poll::Ready(Ok(buffered))
            }
            // Nothing taken (no head parts): the caller waits for room.
            Poll::Pending if buffered == 0 => Poll::Pending,
            Poll::Pending => Poll::Ready(Ok(buffered)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            match &mut self.mode {
                Mode::Answering { .. } if !self.wbuf.is_empty() => {
                    // Earlier responses first.
                    if ready!(self.poll_send_buffered(cx)).is_err() {
                        self.mode = Mode::Closed;
                    }
                }
                Mode::Answering { response, written } => {
                    while *written < response.len() {
                        match Pin::new(&mut self.inner).poll_write(cx, &response[*written..]) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                                self.mode = Mode::Closed;
                                return Poll::Ready(Ok(()));
                            }
                            Poll::Ready(Ok(n)) => *written += n,
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    match Pin::new(&mut self.inner).poll_flush(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(_)) => {
                            self.mode = Mode::Closed;
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Ok(())) => {}
                    }
                    match Pin::new(&mut self.inner).poll_shutdown(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(_) => {}
                    }
                    self.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
                    self.mode = Mode::Lingering { read: 0 };
                }
                Mode::Lingering { read } => {
                    if let Some(l) = self.linger.as_mut() {
                        if l.as_mut().poll(cx).is_ready() {
                            self.mode = Mode::Closed;
                            continue;
                        }
                    }
                    let mut scratch = [0u8; 4096];
                    let mut rb = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                            *read += rb.filled().len();
                            if *read > LINGER_BYTES {
                                self.mode = Mode::Closed;
                            }
                        }
                        Poll::Ready(_) => self.mode = Mode::Closed,
                    }
                }
                Mode::Closed | Mode::Discarding { .. } => return Poll::Ready(Ok(())),
                Mode::Failed(why) => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        *why,
                    )))
                }
                Mode::Serving => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !matches!(this.mode, Mode::Serving) {
                return this.poll_answer(cx);
            }
            if this.deliver(out) {
                return Poll::Ready(Ok(()));
            }
            if this.stop_after_checked {
                this.mode = Mode::Closed;
                continue;
            }
            if let Some((status, why)) = this.pending.take() {
                this.refuse(status, why);
                continue;
            }
            if let Some(why) = this.bad_body.take() {
                this.mode = Mode::Failed(why);
                continue;
            }
            // Fast paths: nothing held, and the bytes need no look (HTTP/2)
            // or only counting (a Content-Length body).
            if this.held.is_empty() {
                if this.framer.is_opaque() {
                    return Pin::new(&mut this.inner).poll_read(cx, out);
                }
                if let Some(left) = this.framer.fixed_left() {
                    let limit = out.remaining().min(left.min(usize::MAX as u64) as usize);
                    let mut sub = out.take(limit);
                    let poll = Pin::new(&mut this.inner).poll_read(cx, &mut sub);
                    let n = sub.filled().len();
                    if let Poll::Ready(Ok(())) = poll {
                        // SAFETY: `sub` wrote n initialized bytes into `out`'s
                        // unfilled part.
                        unsafe { out.assume_init(n) };
                        out.advance(n);
                        this.framer.take_fixed(n);
                    }
                    return poll;
                }
            }
            // Read on the stack and keep only what arrived: an idle
            // connection then holds no read buffer (thousands of idle
            // keep-alive clients would otherwise pin 16 KiB each).
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut rb = ReadBuf::uninit(&mut chunk);
            let poll = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            this.held.extend_from_slice(rb.filled());
            match poll {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if n == 0 => {
                    // The client closed: pingora sees the end (an
                    // unfinished head stays unfinished).
                    this.held.clear();
                    this.checked = 0;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    this.check_held();
                    continue;
                }
                Poll::Pending => {
                    if let Some(d) = this.deadline.as_mut() {
                        if this.framer.in_head() && d.as_mut().poll(cx).is_ready() {
                            if this.held.is_empty() {
                                // Nothing sent at all: close without a word.
                                this.mode = Mode::Closed;
                            } else {
                                this.refuse(408, "request head not received in time");
                            }
                            continue;
                        }
                    }
                    this.release_idle_buffers();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.wbuf.len() + buf.len() > WRITE_BUFFER {
            if !this.wbuf.is_empty() {
                ready!(this.poll_send_buffered(cx))?;
            }
            if buf.len() >= WRITE_BUFFER {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
        }
        this.wbuf.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buffered(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buffered(cx))?;
        if matches!(this.mode, Mode::Serving) && this.framer.body_unfinished() {
            // Answered (413, 408...) before the client finished its upload:
            // closing now would reset the connection under the answer.
            this.mode = Mode::Discarding { shut: false };
            this.linger = Some(Box::pin(tokio::time::sleep(UPLOAD_LINGER)));
        }
        if matches!(this.mode, Mode::Discarding { .. }) {
            return this.poll_discard(cx);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let this = self.get_mut();
        if let Some((last, head)) = bufs.split_last() {
            if this.wbuf.is_empty() && last.len() >= WRITE_DIRECT && this.inner.is_write_vectored()
            {
                return this.poll_write_head_and_body(cx, head, last);
            }
        }
        if this.wbuf.len() + total <= WRITE_BUFFER {
            this.gather(bufs);
            return Poll::Ready(Ok(total));
        }
        // Small parts before a large one are gathered first: a stream that
        // writes one slice at a time (TLS) would send each as its own record.
        if let Some((last, head)) = bufs.split_last() {
            let head_len = total - last.len();
            if head_len > 0 && this.wbuf.len() + head_len <= WRITE_BUFFER {
                this.gather(head);
                return Poll::Ready(Ok(head_len));
            }
        }
        ready!(this.poll_send_buffered(cx))?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<std::sync::Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        match self.inner.selected_alpn_proto() {
            // pingora names only h2 and http/1.1 and would hand anything
            // else (our `http/1.0`) to its custom-protocol path.
            Some(ALPN::Custom(_)) => Some(ALPN::H1),
            other => other,
        }
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(
        &self,
    ) -> Option<std::sync::Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<std::sync::Arc<pingora_core::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

/// What pingora compares its h2c peek with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[async_trait]
impl Peek for Guarded {
    /// pingora asks this once per plain connection when h2c is on, to look
    /// for the HTTP/2 preface. The transport's own peek waits for all 24
    /// bytes, bypassing the framer and the header deadline: a short
    /// HTTP/1.0 request (or silence) would then hang forever. So read
    /// through this guard instead, stop as soon as the bytes cannot be the
    /// preface, and put them back for pingora to read again.
    ///
    /// An empty `buf` is corral's own call (`conn::accept::serve_http1`):
    /// wait until a request's first bytes are in, keep them for pingora,
    /// and say whether there are any (false: the client closed).
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if buf.is_empty() {
            return self.await_bytes().await;
        }
        let mut got: Vec<u8> = Vec::with_capacity(buf.len());
        while got.len() < buf.len() && H2_PREFACE.starts_with(&got) {
            let mut piece = vec![0u8; buf.len() - got.len()];
            let n = self.read_checked(&mut piece).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        self.put_back(&got);
        // Always "peeked": pingora takes an unpeeked stream for HTTP/2. A
        // short read leaves zeros, which are not the preface.
        buf.fill(0);
        buf[..got.len()].copy_from_slice(&got);
        Ok(true)
    }
}

impl Guarded {
    /// Waits for the next bytes and keeps them for pingora. The read's
    /// buffer lives on the stack of one poll, not in the future: an idle
    /// keep-alive client or WebSocket waits here for hours, and a buffer
    /// kept across the wait cost each one 630 bytes.
    async fn await_bytes(&mut self) -> std::io::Result<bool> {
        std::future::poll_fn(|cx| {
            let mut piece = [0u8; 512];
            let mut rb = ReadBuf::new(&mut piece);
            match Pin::new(&mut *self).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    self.put_back(&piece[..n]);
                    Poll::Ready(Ok(n > 0))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Reads through the framer, so the header deadline and the byte
    /// checks apply to a peek too.
    async fn read_checked(&mut self, piece: &mut [u8]) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(piece);
            Pin::new(&mut *self)
                .poll_read(cx, &mut rb)
                .map_ok(|()| rb.filled().len())
        })
        .await
    }

    /// The bytes read and cleared by the framer that no one has taken yet
    /// (heads and bodies of whole requests, in order); none once the
    /// connection stops serving.
    pub fn checked(&self) -> &[u8] {
        match self.mode {
            Mode::Serving => &self.held[..self.checked],
            _ => &[],
        }
    }

    /// The client's address, as the access log writes it.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// The first `n` checked bytes were answered outside pingora
    /// (`conn::shortcut`): as if pingora had read them.
    pub fn take_checked(&mut self, n: usize) {
        let n = n.min(self.checked);
        self.held.drain(..n);
        self.checked -= n;
    }

    /// Bytes read by a peek go back in front: already checked by the
    /// framer, they are handed out again as they are.
    fn put_back(&mut self, bytes: &[u8]) {
        self.held.splice(0..0, bytes.iter().copied());
        self.checked += bytes.len();
    }
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("client", &self.client)
            .field("held", &self.held.len())
            .finish()
    }
}
