# corral's ASGI server, run on an ASGI worker's one Python thread.
#
# The worker's socket is served by the event loop itself (asyncio or uvloop):
# the edge opens one Unix connection per request in flight and reuses it for
# the next, so a connection (`Hop`) carries at most one request at a time.
# The request head is parsed and the scope built in Rust (`rt.parse_head`);
# responses are framed in Rust (`rt.Framer`, shared with the WSGI worker).
# No thread hands work to another: the loop reads, runs the app and writes.
#
# `rt` is the Rust side (worker/asgi/runtime.rs): the parser, the framer,
# the stop flag, the heartbeat the loop-blocked watchdog watches, the
# recycling counters and the log.

import asyncio
import collections
import os
import select
import traceback

# Request body bytes buffered per request before the edge is asked to wait:
# 64 KiB, as uvicorn. Each request may hold this and one read (256 KiB) of
# a body its app has not taken yet, and a worker runs up to `concurrency`
# of them: at 1 MiB, 100 uploads waiting on a slow app grew it 110 MiB.
READ_HIGH_WATER = 1 << 16
MAX_HEAD = 1 << 20
# A WebSocket's messages the app has not received yet: past either bound
# the worker stops reading that socket, so a client sending faster than the
# app receives waits in TCP flow control (through the edge) instead of
# growing the worker (the websockets library's max_queue does the same).
INBOX_MESSAGES = 16
INBOX_BYTES = 1 << 20
# How often the loop proves it is alive and checks stop and recycling.
TICK = 0.1
# A stopping worker exits after this long with nothing in flight (covers a
# request the edge dispatched just before it heard "down").
DRAIN_QUIET = 0.3

rt = None  # set by boot()


class ClientDisconnected(OSError):
    """send() after the client went away (ASGI HTTP spec 2.4)."""


class BootFailure(Exception):
    """Lifespan startup failed: the worker does not come up."""


def new_loop(choice):
    """The event loop for `[app] loop`; returns (loop, name)."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise BootFailure(
                    "app.loop = \"uvloop\" but uvloop is not installed in the virtualenv "
                    "(pip install uvloop)")
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"


def error_text(exc):
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


class Lifespan:
    """ASGI lifespan: startup before the worker says ready, shutdown when it
    stops. `state` is shared (copied shallowly) into every request's scope."""

    def __init__(self, app, mode, loop):
        self.app = app
        self.mode = mode
        self.loop = loop
        self.state = {}
        self.supported = mode != "off"
        self.inbox = asyncio.Queue()
        self.started = loop.create_future()
        self.stopped = loop.create_future()
        self.task = None

    async def run(self):
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self.send)
        except BaseException as e:
            if not self.started.done():
                if self.mode == "auto":
                    rt.log_info("the app does not support ASGI lifespan; serving without it "
                                f"({type(e).__name__}: {e})")
                    self.supported = False
                    self.started.set_result(None)
                else:
                    self.started.set_exception(BootFailure(
                        f"lifespan startup raised:\n{error_text(e)}"))
            elif not self.startup_failed():
                # (Starlette re-raises what it already reported in
                # lifespan.startup.failed: the boot failure says it once.)
                rt.log_error(f"error in the app's lifespan:\n{error_text(e)}")
        finally:
            if not self.started.done():
                self.supported = self.mode == "on"
                if self.mode == "on":
                    self.started.set_exception(BootFailure(
                        "the app returned from lifespan without completing startup"))
                else:
                    self.started.set_result(None)
            if not self.stopped.done():
                self.stopped.set_result(None)

    def startup_failed(self):
        return self.started.done() and self.started.exception() is not None

    async def send(self, message):
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set_result(None)
        elif kind == "lifespan.startup.failed":
            self.started.set_exception(BootFailure(
                message.get("message") or "lifespan startup failed"))
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            rt.log_error(f"lifespan shutdown failed: {message.get('message', '')}")
            self.stopped.set_result(None)
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")

    async def startup(self):
        if self.mode == "off":
            return
        self.task = self.loop.create_task(self.run())
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started

    async def shutdown(self, timeout):
        if not self.supported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(asyncio.shield(self.stopped), timeout)
        except asyncio.TimeoutError:
            rt.log_error(f"lifespan shutdown did not finish within {timeout:.0f}s")


class Server:
    def __init__(self, app, loop, lifespan, graceful, app_timeout, websocket):
        self.app = app
        self.loop = loop
        self.lifespan = lifespan
        self.graceful = graceful
        self.app_timeout = app_timeout  # seconds; 0: none
        (self.max_message, self.ping_interval, self.idle_timeout, self.close_sockets_after,
         self.compression) = websocket
        self.hops = set()
        self.websockets = set()
        self.in_flight = 0
        # Keep-alive looks at every open WebSocket this often (see
        # `keep_websockets_alive`); None when neither pings nor closes.
        every = self.ping_interval or self.idle_timeout
        self.sweep_every = min(1.0, every / 2) if every else None

    async def serve(self, sock):
        server = await self.loop.create_unix_server(lambda: Hop(self), sock=sock, backlog=1024)
        quiet_since = None
        stop_began = None
        next_sweep = 0.0
        while True:
            rt.tick()
            now = self.loop.time()
            if self.sweep_every and now >= next_sweep:
                next_sweep = now + self.sweep_every
                self.keep_websockets_alive(now)
            if rt.stopping():
                stop_began = stop_began or now
                self.close_websockets_after(now - stop_began)
            if rt.stopping() and self.in_flight == 0:
                quiet_since = quiet_since or now
                if now - quiet_since >= DRAIN_QUIET:
                    break
            else:
                quiet_since = None
            await asyncio.sleep(TICK)
        server.close()
        for hop in list(self.hops):
            hop.transport.close()
        await self.lifespan.shutdown(self.graceful)


    def keep_websockets_alive(self, now):
        """Pings and idle closes for every open WebSocket in one pass, not a
        timer per socket: thousands sit idle per worker, and a timer each
        cost ~600 bytes apiece."""
        for ws in list(self.websockets):
            ws.keep_alive(now)

    def close_websockets_after(self, stopping_for):
        """Open WebSockets get the graceful timeout (less a second to say
        goodbye before the master's deadline: `close_sockets_after`), then
        a 1001 close."""
        if self.websockets and stopping_for >= self.close_sockets_after:
            for ws in list(self.websockets):
                ws.server_close(1001, "server shutting down")


class Hop(asyncio.Protocol):
    """One connection from the edge."""

    def __init__(self, server):
        self.server = server
        self.transport = None
        self.buf = b""
        self.cycle = None
        self.paused = False
        self.drain = None
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport
        self.server.hops.add(self)

    def connection_lost(self, exc):
        self.lost = True
        self.server.hops.discard(self)
        if self.cycle is not None:
            self.cycle.disconnect()
        self.wake_writer()

    def data_received(self, data):
        if self.cycle is not None:
            self.cycle.feed(data)
            return
        self.buf += data
        self.next_request()

    def next_request(self):
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self.refuse(431, "request head too large")
            return
        self.buf = b""
        try:
            scope, length, keep_alive = rt.parse_head(buf[:end + 4], self.server.lifespan.state)
        except ValueError as e:
            self.refuse(*e.args)
            return
        if scope["type"] == "websocket":
            cycle = self.cycle = WebSocketCycle(self, scope)
        else:
            cycle = self.cycle = HttpCycle(self, scope, length, keep_alive)
        if end + 4 < len(buf):
            cycle.feed(buf[end + 4:])
        cycle.task = self.server.loop.create_task(cycle.run())

    def eof_received(self):
        """The edge stopped sending. A half-close means the edge is stopping:
        an open WebSocket says goodbye (1001). A full close (the client went
        away) just ends it, and the app hears 1006."""
        cycle = self.cycle
        if isinstance(cycle, WebSocketCycle) and cycle.state == "open" and not self.peer_closed():
            cycle.server_close(1001, "server shutting down", linger=False)
            return True
        return None

    def peer_closed(self):
        """Whether the edge closed both directions (POLLHUP on a Unix
        socket), not only its sending side."""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return True
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return any(ev & select.POLLHUP for _, ev in poller.poll(0))

    def refuse(self, status, why):
        rt.log_debug(f"bad request from the edge: {why}")
        self.transport.write(rt.error_response(status, False))
        self.transport.close()

    def response_done(self, keep_alive):
        """The response is all written: the next request may come."""
        self.cycle = None
        if not keep_alive:
            self.transport.close()
        elif self.buf:
            self.next_request()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self.wake_writer()

    def wake_writer(self):
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)
        self.drain = None

    async def drained(self):
        if self.paused and not self.lost:
            if self.drain is None:
                self.drain = self.server.loop.create_future()
            await self.drain


class Waiting:
    """A cycle whose receive() may wait: `wake` ends the wait."""

    __slots__ = ()

    def wake(self):
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)


class HttpCycle(Waiting):
    """One HTTP request: the app's receive() and send()."""

    __slots__ = ("hop", "scope", "left", "chunks", "buffered", "final_sent", "waiter",
                 "disconnected", "complete", "started", "status", "headers", "framer",
                 "keep_alive", "task", "reading_paused", "trailers", "body_done",
                 "after_body", "began")

    def __init__(self, hop, scope, length, keep_alive):
        self.hop = hop
        self.scope = scope
        self.left = length
        self.chunks = collections.deque()
        self.buffered = 0
        self.final_sent = False
        self.waiter = None
        self.disconnected = False
        self.complete = False
        self.started = False
        self.status = 200
        self.headers = ()
        self.framer = None
        self.keep_alive = keep_alive
        self.task = None
        self.reading_paused = False
        self.trailers = None  # a list once the app declares trailers
        self.body_done = False
        # Answered before its body was all read: the keep-alive to go on
        # with once the rest has come and been dropped (`end`).
        self.after_body = None
        self.began = hop.server.loop.time()

    # ---- from the edge ----------------------------------------------------

    def feed(self, data):
        hop = self.hop
        if self.left == 0:
            hop.buf += data  # the next request, sent early
            return
        if len(data) > self.left:
            hop.buf += data[self.left:]
            data = data[:self.left]
        self.left -= len(data)
        if self.after_body is not None:
            if self.left == 0:
                hop.response_done(self.after_body)
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            hop.transport.pause_reading()
        self.wake()

    def disconnect(self):
        """The edge closed the hop: the client went away, or app.timeout
        ran out (a 504). The task is cancelled, it and nothing else, when
        it timed out or was streaming its body: a stream to nobody (server-
        sent events quiet for an hour) ends now, not at a next write that
        may never come. A handler that has not begun its body runs to its
        end, as under uvicorn and gunicorn: it is never stopped between two
        of its writes (a debit and its credit), its final send is dropped
        quietly and its background tasks run. receive() says
        http.disconnect; a streamed piece raises ClientDisconnected (an
        OSError, ASGI 2.4)."""
        self.disconnected = True
        self.wake()
        streaming = self.framer is not None
        if (streaming or self.timed_out()) and not self.complete \
                and self.task is not None and not self.task.done():
            self.task.cancel()

    def timed_out(self):
        """Whether app.timeout has run out for this request. The edge
        counts from when it sent the head, a moment before this worker read
        it, hence the margin."""
        limit = self.hop.server.app_timeout
        if not limit:
            return False
        elapsed = self.hop.server.loop.time() - self.began
        return elapsed >= limit - min(0.25, limit / 10)


    # ---- the app's side -----------------------------------------------------

    async def receive(self):
        while True:
            if self.chunks or (self.left == 0 and not self.final_sent):
                return self.body_message()
            if self.disconnected or self.complete:
                return {"type": "http.disconnect"}
            await self.sleep()

    async def sleep(self):
        """Until `wake`. Several calls may wait at once (Starlette's
        request.is_disconnected() beside a body read, sse-starlette's
        watcher): they share one future, each through a shield, so that a
        call given up (asyncio.wait_for) does not cancel the others' wait."""
        w = self.waiter
        if w is None:
            w = self.waiter = self.hop.server.loop.create_future()
        await asyncio.shield(w)

    def body_message(self):
        chunks = self.chunks
        if len(chunks) == 1:
            body = chunks.popleft()
        else:
            body = b"".join(chunks)
            chunks.clear()
        self.buffered = 0
        self.resume_reading()
        more = self.left > 0
        self.final_sent = not more
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(self, message):
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started:
                raise RuntimeError("ASGI app sent 'http.response.body' before 'http.response.start'")
            if self.complete or self.body_done:
                raise RuntimeError("ASGI app sent 'http.response.body' after the response ended")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self.disconnected:
                if more:
                    raise ClientDisconnected("the client went away")
                self.end(False)
                return
            framer = self.framer
            if framer is None and not more and self.trailers is None:
                # The common case: the whole response in one message.
                out, keep_alive = rt.Framer.whole(self.scope["method"] == "HEAD", self.keep_alive,
                                                  self.status, self.headers, body)
                self.hop.transport.write(out)
                self.end(keep_alive)
                return
            if framer is None:
                framer = rt.Framer(self.scope["method"] == "HEAD", self.keep_alive)
                out = framer.head(self.status, self.headers, None, body)
                self.framer = framer
            else:
                out = framer.body(body)
            if not more and self.trailers is None:
                out += framer.finish()
            if out:
                self.hop.transport.write(out)
            if not more:
                if self.trailers is None:
                    self.end(framer.keep_alive)
                else:
                    self.body_done = True  # the trailers end it
            elif self.hop.paused:
                await self.drained()
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("ASGI app sent 'http.response.start' twice")
            self.status = message["status"]
            self.headers = message.get("headers", ())
            self.started = True
            if message.get("trailers") and "http.response.trailers" in self.scope["extensions"]:
                self.trailers = []
        elif kind == "http.response.trailers":
            self.send_trailers(message)
        elif kind == "http.response.pathsend":
            if not self.started or self.framer is not None or self.complete:
                raise RuntimeError("ASGI app sent 'http.response.pathsend' outside a response's body")
            if self.disconnected:
                self.end(False)
                return
            await self.send_path(message["path"])
        elif kind == "http.response.early_hint":
            # Ignored once the response started, as the extension says.
            if not self.started and not self.disconnected:
                self.hop.transport.write(rt.early_hints(message.get("links", ())))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an HTTP request")

    def send_trailers(self, message):
        """http.response.trailers, after the last body message: gathered
        until `more_trailers` is false, then they end the chunked body."""
        if self.trailers is None:
            if "http.response.trailers" in self.scope["extensions"]:
                raise RuntimeError("ASGI app sent trailers without declaring them in "
                                   "'http.response.start'")
            return  # not offered (HTTP/1 client): dropped, as the spec allows
        if not self.body_done or self.complete:
            raise RuntimeError("ASGI app sent 'http.response.trailers' before the body ended")
        self.trailers.extend(message.get("headers", ()))
        if not message.get("more_trailers", False):
            self.hop.transport.write(self.framer.finish_trailers(self.trailers))
            self.end(self.framer.keep_alive)

    async def send_path(self, path):
        """http.response.pathsend: the file goes to the edge by sendfile(2)
        where the loop has it (asyncio's does; uvloop's has none, so there
        it is copied in large pieces, still without the app's Python)."""
        hop = self.hop
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            framer = rt.Framer(self.scope["method"] == "HEAD", self.keep_alive)
            hop.transport.write(framer.head(self.status, self.headers, size, b""))
            self.framer = framer
            count = framer.expects()
            if count is None:  # chunked cannot happen with a known length
                raise RuntimeError("pathsend needs a length")
            count = min(count, size)
            if count:
                # What was really sent: a file that shrank meanwhile leaves
                # the body short, and the framer then closes the hop.
                try:
                    sent = await hop.server.loop.sendfile(hop.transport, f, 0, count)
                except NotImplementedError:
                    sent = await self.copy_file(f, count)
                framer.sent(sent)
        out = framer.finish()
        if out:
            hop.transport.write(out)
        self.end(framer.keep_alive)

    async def copy_file(self, f, count):
        hop = self.hop
        sent = 0
        while sent < count and not hop.lost:
            piece = f.read(min(count - sent, 256 * 1024))
            if not piece:
                break
            sent += len(piece)
            hop.transport.write(piece)
            if hop.paused:
                await self.drained()
        return sent

    async def drained(self):
        """Waits until the edge reads the answer again. It reads while it
        still sends the body, so a body the app has not read stays held
        back (READ_HIGH_WATER) while the app waits to write."""
        await self.hop.drained()

    def end(self, keep_alive):
        self.complete = True
        self.wake()
        keep_alive = keep_alive and not self.hop.lost
        if self.left > 0 and not self.hop.lost:
            # Answered without reading the whole body (a 401 before an
            # upload, say): what of the rest is already on its way is read
            # and dropped, as nginx and uvicorn do; the edge stops sending
            # and closes the hop once it has the whole answer.
            self.after_body = keep_alive
            self.chunks.clear()
            self.buffered = 0
            self.resume_reading()
            return
        self.hop.response_done(keep_alive)

    def resume_reading(self):
        """Reading the body goes on if `feed` paused it."""
        if self.reading_paused:
            self.reading_paused = False
            self.hop.transport.resume_reading()

    async def run(self):
        server = self.hop.server
        server.in_flight += 1
        try:
            await server.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.disconnected:
                raise
        except BaseException as e:
            if not self.disconnected:
                rt.log_error(f"error in app for {self.summary()}:\n{error_text(e)}")
                self.fail()
        else:
            if not self.complete and not self.disconnected:
                rt.log_error(f"ASGI app returned without completing the response for {self.summary()}")
                self.fail()
        finally:
            server.in_flight -= 1
            rt.after_request()

    def summary(self):
        s = self.scope
        q = s["query_string"]
        return f"{s['method']} {s['path']}" + (f"?{q.decode('latin-1')}" if q else "")

    def fail(self):
        """A 500 if nothing was sent, else cut the response short (the edge
        sees the truncation and tells the client)."""
        if self.complete or self.hop.lost:
            return
        if self.framer is None:
            self.hop.transport.write(rt.error_response(500, self.keep_alive))
            self.end(self.keep_alive)
        else:
            self.complete = True
            self.hop.cycle = None
            self.hop.transport.close()


class WebSocketCycle(Waiting):
    """One WebSocket: the handshake answered by the app's accept (or
    denied), then messages both ways until either side closes. Frames are
    tungstenite's business (`rt.WebSocket`); this class only moves messages.
    Slotted, as HttpCycle: thousands of idle sockets per worker each hold one."""

    __slots__ = ("hop", "scope", "state", "inbox", "waiter", "ws", "early", "code", "task",
                 "framer", "pending_start", "head_sent", "last_heard", "last_ping", "queued",
                 "reading_paused")

    def __init__(self, hop, scope):
        self.hop = hop
        self.scope = scope
        self.state = "connecting"  # then "open", "closing", "closed"
        # None when empty: an idle socket holds no queue (a deque is ~600 bytes).
        self.inbox = collections.deque([{"type": "websocket.connect"}])
        self.waiter = None
        self.ws = None
        self.early = b""
        self.code = None
        self.task = None
        self.framer = None
        self.pending_start = None
        self.head_sent = False
        self.last_heard = self.last_ping = hop.server.loop.time()
        self.queued = 0  # payload bytes (or characters) in the inbox
        self.reading_paused = False

    # ---- from the edge ----------------------------------------------------

    def feed(self, data):
        if self.ws is None:
            self.early += data  # frames cannot come before the 101; keep them
            if len(self.early) >= INBOX_BYTES:
                self.pause_reading()
            return
        self.last_heard = self.hop.server.loop.time()
        for kind, payload in self.ws.feed(data):
            if kind == "text" or kind == "bytes":
                self.post({"type": "websocket.receive", kind: payload})
                self.queued += len(payload)
            else:
                self.flush()
                self.closed(*payload)
                self.hop.transport.close()
                return
        if self.inbox_length() >= INBOX_MESSAGES or self.queued >= INBOX_BYTES:
            self.pause_reading()
        self.flush()
        self.wake()

    def post(self, message):
        if self.inbox is None:
            self.inbox = collections.deque()
        self.inbox.append(message)

    def inbox_length(self):
        return len(self.inbox) if self.inbox else 0

    def pause_reading(self):
        if not self.reading_paused and not self.hop.lost:
            self.reading_paused = True
            self.hop.transport.pause_reading()

    def resume_reading_if_drained(self):
        """Reads again once the app has taken half of what stopped it."""
        if not self.reading_paused or len(self.early) >= INBOX_BYTES:
            return
        if self.inbox_length() < INBOX_MESSAGES // 2 and self.queued < INBOX_BYTES // 2:
            self.reading_paused = False
            if not self.hop.lost:
                self.hop.transport.resume_reading()

    def disconnect(self):
        """The hop closed (the client or the edge went away)."""
        self.closed(1006, "")

    def closed(self, code, reason):
        if self.state == "closed":
            return
        self.state = "closed"
        self.code = code
        self.hop.server.websockets.discard(self)
        self.post({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.wake()


    def flush(self):
        out = self.ws.take_output()
        if out and not self.hop.lost:
            self.hop.transport.write(out)

    # ---- keep-alive -------------------------------------------------------

    def keep_alive(self, now):
        """Closes a socket quiet past idle_timeout, pings one due a ping."""
        if self.state != "open":
            return
        server = self.hop.server
        if self.reading_paused:
            # Not read because the app is behind, not because it is quiet.
            self.last_heard = now
        if server.idle_timeout and now - self.last_heard >= server.idle_timeout:
            self.server_close(1001, "idle timeout")
        elif server.ping_interval and now - self.last_ping >= server.ping_interval:
            self.last_ping = now
            self.ws.ping()
            self.flush()

    def server_close(self, code, reason, linger=True):
        """The server ends it (shutdown, idle): a close frame, then the hop
        closes once the client answers or after two seconds (at once, with
        the frame flushed, when the edge is going away)."""
        if self.state != "open":
            return
        self.ws.close(code, reason)
        self.flush()
        self.state = "closing"
        if linger:
            self.hop.server.loop.call_later(2.0, self.hop.transport.close)
        else:
            self.hop.transport.close()
        self.post({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.wake()

    # ---- the app's side -----------------------------------------------------

    async def receive(self):
        while not self.inbox:
            if self.state == "closed":
                return {"type": "websocket.disconnect", "code": self.code or 1006, "reason": ""}
            self.waiter = self.hop.server.loop.create_future()
            await self.waiter
        message = self.inbox.popleft()
        if not self.inbox:
            self.inbox = None
        if message["type"] == "websocket.receive":
            payload = message.get("bytes")
            self.queued -= len(payload if payload is not None else message.get("text") or "")
            self.resume_reading_if_drained()
        return message

    async def send(self, message):
        kind = message["type"]
        if kind == "websocket.send":
            if self.state != "open":
                if self.state == "connecting":
                    raise RuntimeError("ASGI app sent 'websocket.send' before 'websocket.accept'")
                raise ClientDisconnected("the WebSocket is closed")
            data = message.get("bytes")
            if data is not None:
                self.ws.send_bytes(data)
            else:
                self.ws.send_text(message["text"])
            self.flush()
            if self.hop.paused:
                await self.hop.drained()
        elif kind == "websocket.accept":
            self.accept(message)
        elif kind == "websocket.close":
            self.app_close(message)
        elif kind in ("websocket.http.response.start", "websocket.http.response.body"):
            self.deny(message)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for a WebSocket")

    def accept(self, message):
        if self.state != "connecting":
            raise RuntimeError("ASGI app sent 'websocket.accept' twice or too late")
        server = self.hop.server
        key, offers = b"", []
        for name, value in self.scope["headers"]:
            if name == b"sec-websocket-key":
                key = value
            elif name == b"sec-websocket-extensions":
                offers.append(value.decode("latin-1"))
        self.ws = rt.WebSocket(server.max_message, ", ".join(offers) or None, server.compression)
        self.hop.transport.write(self.ws.handshake(key, message.get("subprotocol"),
                                                   message.get("headers", ())))
        self.state = "open"
        server.websockets.add(self)
        self.last_heard = self.last_ping = server.loop.time()
        if self.early:
            early, self.early = self.early, b""
            self.feed(early)
        self.resume_reading_if_drained()

    def app_close(self, message):
        code = message.get("code", 1000)
        if self.state == "connecting":
            # Closing before accepting denies the handshake: HTTP 403.
            self.hop.transport.write(rt.error_response(403, False))
            self.hop.transport.close()
            self.closed(code, "")
        elif self.state == "open":
            self.ws.close(code, message.get("reason") or "")
            self.flush()
            self.state = "closing"
            self.hop.server.loop.call_later(2.0, self.hop.transport.close)

    def deny(self, message):
        """The websocket.http.response extension: an HTTP answer instead of 101."""
        if self.state != "connecting":
            raise RuntimeError("ASGI app sent a denial response after accepting")
        if message["type"] == "websocket.http.response.start":
            self.framer = rt.Framer(False, False)
            self.pending_start = message
            return
        if self.framer is None:
            raise RuntimeError("'websocket.http.response.body' before its start")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.head_sent:
            out = self.framer.body(body)
        else:
            start = self.pending_start
            out = self.framer.head(start["status"], start.get("headers", ()),
                                   None if more else len(body), body)
            self.head_sent = True
        if not more:
            out += self.framer.finish()
        self.hop.transport.write(out)
        if not more:
            self.hop.transport.close()
            self.closed(1000, "")

    def summary(self):
        return f"WebSocket {self.scope['path']}"

    async def run(self):
        server = self.hop.server
        server.in_flight += 1
        failed = False
        try:
            await server.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            pass
        except BaseException as e:
            if self.state != "closed":
                failed = True
                rt.log_error(f"error in app for {self.summary()}:\n{error_text(e)}")
        finally:
            server.in_flight -= 1
            rt.after_request()
            self.end(failed)

    def end(self, failed):
        """The app returned: an unanswered handshake is refused (403), an
        open socket is closed (1000), as the ASGI spec has it. If it raised
        instead, the client hears an error: a 500 for the handshake, 1011
        on an open socket (as uvicorn, hypercorn and daphne answer)."""
        hop = self.hop
        if self.state == "connecting" and not hop.lost:
            hop.transport.write(rt.error_response(500 if failed else 403, False))
            hop.transport.close()
        elif self.state == "open":
            self.server_close(1011 if failed else 1000, "")
        self.closed(self.code or 1000, "")


def boot(runtime, app, lifespan_mode, loop_choice, graceful, app_timeout, websocket):
    """Makes the loop and runs lifespan startup; returns the server, or
    raises BootFailure with the app's message."""
    global rt
    rt = runtime
    loop, name = new_loop(loop_choice)
    asyncio.set_event_loop(loop)
    lifespan = Lifespan(app, lifespan_mode, loop)
    loop.run_until_complete(lifespan.startup())
    return Server(app, loop, lifespan, graceful, app_timeout, websocket), name


def serve(server, fd):
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
    sock.setblocking(False)
    try:
        server.loop.run_until_complete(server.serve(sock))
    finally:
        server.loop.close()


def tasks_text(server):
    """`corral dump` (called with the GIL from the worker's dump thread,
    `worker/stack_dump.rs`): where each request's task is awaiting, named
    by its request, walked through `cr_await`."""
    out = ["Requests' tasks, each at its await (most recent call last):\n"]
    for hop in list(server.hops):
        cycle = hop.cycle
        task = getattr(cycle, "task", None)
        if task is None or task.done():
            continue
        scope = cycle.scope
        rid = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "-")
        target = scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        method = scope.get("method", "WEBSOCKET")
        out.append(f"Task for {method} {target} (request {rid}):\n")
        coro = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                code = frame.f_code
                out.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}\n')
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "".join(out)
