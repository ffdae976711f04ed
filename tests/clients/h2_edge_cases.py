"""HTTP/2 edge cases against corral, scripted with the python `h2` package
(hyper-h2) and raw `hyperframe` frames over plain sockets.

    python h2_edge_cases.py --host 127.0.0.1 --port P --h2c
    python h2_edge_cases.py --host 127.0.0.1 --port P --tls --cafile ca.pem
        [--pid MASTER_PID] [--only NAME[,NAME]] [--case-timeout S] [--lenient-malformed]

The site may run tests/apps/clients_app.py: /bytes/<n> answers n known
bytes (either formula that app has used), /upload answers the length and
sha256 of the body (as text or JSON). Against tests/apps/hello.py ("Hello,
World!" for every path) the cases that need a large response are skipped.

Every case runs under a hard timeout (SIGALRM) and, hostile or not, is
followed by a fresh connection that must get a normal GET answered. Prints
`PASS name`, `FAIL name: reason` (with the frames the server sent) or
`SKIP name: reason`, then a summary; exits 1 if any case failed.
With --pid (the corral master), the RSS of its process tree is noted and a
case fails if the master died or the tree grew by more than 512 MiB.
"""
import argparse
import hashlib
import json
import os
import select
import signal
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HELLO = b"Hello, World!"
S = h2.settings.SettingCodes


# The formulas tests/apps/clients_app.py has used for /bytes/<n>; the probe
# picks the one the site answers with.
def body_numbered(n, _cache={}):
    if n not in _cache:
        line = b"%08d corral client matrix: compressible text\n"
        _cache[n] = b"".join(line % i for i in range(n // len(line % 0) + 1))[:n]
    return _cache[n]


def body_repeated(n):
    line = b"corral client matrix line, fairly compressible text\n"
    return (line * (n // len(line) + 1))[:n]


BODIES = [body_numbered, body_repeated]


def body(n):
    return Site.body(n)


def upload_answer_matches(data, payload):
    """/upload answers "<len> <sha256>\n" or {"len": .., "sha256": ..}."""
    want_len, want_sha = len(payload), hashlib.sha256(payload).hexdigest()
    try:
        if data.lstrip().startswith(b"{"):
            d = json.loads(data)
            return d.get("len") == want_len and d.get("sha256") == want_sha
        n, sha = data.split()
        return int(n) == want_len and sha.decode() == want_sha
    except ValueError:
        return False


def err_name(code):
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return "0x%x" % code


class Fail(Exception):
    pass


class Skip(Exception):
    pass


class CaseTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so no `except Exception` eats it."""


# ---------------------------------------------------------------- frames seen

class Tracer:
    """Parses every byte the server sends into frames (independently of the
    h2 state machine), so a failure can say exactly what came back."""

    def __init__(self):
        self.buf = bytearray()
        self.frames = []       # (time, frame, decoded header list or None)
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.pending_block = None
        self.t0 = time.monotonic()
        self.closed = None     # why reading stopped: "eof", "reset", ...

    def feed(self, data):
        self.buf += data
        new = []
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self.buf[:9])))
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(bytes(self.buf[9:9 + length])))
            del self.buf[:9 + length]
            hdrs = None
            if isinstance(frame, HeadersFrame):
                self.pending_block = bytes(frame.data)
            elif isinstance(frame, ContinuationFrame) and self.pending_block is not None:
                self.pending_block += bytes(frame.data)
            if isinstance(frame, (HeadersFrame, ContinuationFrame)) and "END_HEADERS" in frame.flags \
                    and self.pending_block is not None:
                try:
                    hdrs = [(bytes(k), bytes(v)) for k, v in self.decoder.decode(self.pending_block, raw=True)]
                except Exception as e:  # noqa: BLE001 - only for the trace
                    hdrs = [(b"<hpack error>", str(e).encode())]
                self.pending_block = None
            item = (time.monotonic() - self.t0, frame, hdrs)
            self.frames.append(item)
            new.append(item)
        return new

    def of_type(self, cls, sid=None):
        return [f for _, f, _ in self.frames if isinstance(f, cls) and (sid is None or f.stream_id == sid)]

    def since(self, frame, t):
        """Seconds from monotonic time t to the arrival of frame (or now)."""
        for at, f, _ in self.frames:
            if f is frame:
                return at - (t - self.t0)
        return time.monotonic() - t

    def goaway(self):
        g = self.of_type(GoAwayFrame)
        return g[0] if g else None

    def describe(self, last=14, skip_data_runs=True):
        out, data_run = [], None
        items = self.frames[-400:]
        for t, f, hdrs in items:
            if skip_data_runs and isinstance(f, DataFrame) and not f.flags:
                if data_run and data_run[0] == f.stream_id:
                    data_run[1] += 1
                    data_run[2] += len(f.data)
                    continue
                if data_run:
                    out.append("DATA(s%d) x%d, %d bytes" % tuple(data_run))
                data_run = [f.stream_id, 1, len(f.data)]
                continue
            if data_run:
                out.append("DATA(s%d) x%d, %d bytes" % tuple(data_run))
                data_run = None
            out.append("%.2fs %s" % (t, summary(f, hdrs)))
        if data_run:
            out.append("DATA(s%d) x%d, %d bytes" % tuple(data_run))
        out = out[-last:]
        if self.closed:
            out.append("then: %s" % self.closed)
        return "; ".join(out) if out else "(no frames)"


def summary(f, hdrs=None):
    flags = ",".join(sorted(f.flags))
    name = type(f).__name__.replace("Frame", "").upper()
    extra = ""
    if isinstance(f, DataFrame):
        extra = " len=%d" % len(f.data)
    elif isinstance(f, RstStreamFrame):
        extra = " %s" % err_name(f.error_code)
    elif isinstance(f, GoAwayFrame):
        extra = " last=%d %s%s" % (f.last_stream_id, err_name(f.error_code),
                                   (" %r" % bytes(f.additional_data)) if f.additional_data else "")
    elif isinstance(f, WindowUpdateFrame):
        extra = " +%d" % f.window_increment
    elif isinstance(f, SettingsFrame) and f.settings:
        extra = " " + ",".join("%s=%d" % (_setting(k), v) for k, v in f.settings.items())
    if hdrs is not None:
        shown = [(k, v) for k, v in hdrs if k in (b":status", b"allow", b"content-length", b"<hpack error>")]
        extra += " " + " ".join("%s=%s" % (k.decode(), v.decode("latin-1")[:60]) for k, v in shown)
    return "%s(s%d%s)%s" % (name, f.stream_id, (" " + flags) if flags else "", extra)


def _setting(k):
    try:
        return S(k).name
    except ValueError:
        return str(k)


# ---------------------------------------------------------------- connections

def connect(args, timeout=5.0):
    sock = socket.create_connection((args.host, args.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.tls:
        ctx = ssl.create_default_context(cafile=args.cafile)
        ctx.set_alpn_protocols(["h2"])
        if args.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock, server_hostname=args.sni)
        if sock.selected_alpn_protocol() != "h2":
            raise Fail("ALPN chose %r, not h2" % sock.selected_alpn_protocol())
    return sock


def recv_some(sock, tracer, timeout):
    """One recv; returns bytes, or b"" after setting tracer.closed."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except socket.timeout:
        return None
    except ssl.SSLEOFError:
        tracer.closed = "EOF without TLS close_notify"
        return b""
    except ConnectionResetError:
        tracer.closed = "connection reset (RST)"
        return b""
    except ssl.SSLError as e:
        tracer.closed = "TLS error: %s" % e
        return b""
    except OSError as e:
        tracer.closed = "recv error: %s" % e
        return b""
    if not data:
        tracer.closed = "EOF (clean close)"
    return data


def readable(sock):
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    r, _, _ = select.select([sock], [], [], 0)
    return bool(r)


class H2Client:
    """A connection driven by the h2 state machine, lenient on what it sends."""

    def __init__(self, args, settings=None):
        self.args = args
        self.sock = connect(args)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                                        normalize_outbound_headers=False, validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        if settings:
            # Effective from the first frame (not after the server's ACK), so
            # h2's own window bookkeeping matches what the server uses.
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.conn.initiate_connection()
        self.tracer = Tracer()
        self.events = []
        self.unacked = []      # (length, stream) of DATA not yet given back
        self.terminated = None
        self.authority = "%s:%d" % (args.sni if args.tls else args.host, args.port)
        self.scheme = "https" if args.tls else "http"
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError as e:
                if not self.tracer.closed:
                    self.tracer.closed = "send failed: %s" % e

    def headers(self, method="GET", path="/", extra=()):
        return [(":method", method), (":scheme", self.scheme), (":authority", self.authority),
                (":path", path)] + list(extra)

    def pump(self, until=lambda: False, timeout=5.0, ack=True):
        """Reads and handles frames until until() is true, the time is up or
        the connection ends. Returns until()."""
        deadline = time.monotonic() + timeout
        while not until() and not self.tracer.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            data = recv_some(self.sock, self.tracer, min(left, 0.5))
            if data is None:
                continue
            if not data:
                break
            self.tracer.feed(data)
            try:
                evs = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                self.tracer.closed = "h2 client state machine rejected the server's frames: %r" % e
                break
            for ev in evs:
                if isinstance(ev, h2.events.DataReceived):
                    self.unacked.append((ev.flow_controlled_length, ev.stream_id))
                if isinstance(ev, h2.events.ConnectionTerminated):
                    self.terminated = ev
            self.events.extend(evs)
            if ack:
                self.ack_all()
            self.flush()
        return until()

    def ack_all(self):
        for n, sid in self.unacked:
            try:
                self.conn.acknowledge_received_data(n, sid)
            except (h2.exceptions.ProtocolError, KeyError):
                pass
        self.unacked = []
        self.flush()

    def send_request(self, method="GET", path="/", extra=(), hdrs=None, end_stream=True):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, hdrs if hdrs is not None else self.headers(method, path, extra),
                               end_stream=end_stream)
        self.flush()
        return sid

    def result(self, sid):
        r = {"status": None, "headers": {}, "data": b"", "ended": False, "reset": None, "data_frames": 0}
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, h2.events.ResponseReceived):
                r["headers"] = {bytes(k).lower(): bytes(v) for k, v in e.headers}
                r["status"] = int(r["headers"].get(b":status", b"0"))
            elif isinstance(e, h2.events.DataReceived):
                r["data"] += e.data
                r["data_frames"] += 1
            elif isinstance(e, h2.events.StreamEnded):
                r["ended"] = True
            elif isinstance(e, h2.events.StreamReset):
                r["reset"] = e.error_code
        return r

    def done(self, sid):
        r = self.result(sid)
        return r["ended"] or r["reset"] is not None

    def wait(self, sid, timeout=8.0):
        self.pump(lambda: self.done(sid) or self.terminated is not None, timeout)
        return self.result(sid)

    def get(self, path, timeout=8.0):
        return self.wait(self.send_request("GET", path), timeout)

    def fail(self, msg):
        return Fail("%s; frames: %s" % (msg, self.tracer.describe()))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# A minimal HPACK encoder for raw frames: literals without indexing (no
# dynamic-table state), except where a case inserts on purpose.

def hint(value, prefix, flags=0):
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def hstr(s):
    s = s.encode() if isinstance(s, str) else s
    return hint(len(s), 7) + s


def lit(name, value):
    return b"\x00" + hstr(name) + hstr(value)


def lit_with_name_index(index, value):
    return hint(index, 4) + hstr(value)


def lit_insert(name, value):
    """Literal with incremental indexing: added to the dynamic table."""
    return b"\x40" + hstr(name) + hstr(value)


def request_block(c, method="GET", path="/", extra=()):
    out = {"GET": b"\x82", "POST": b"\x83"}.get(method) or lit_with_name_index(2, method)
    out += b"\x87" if c.scheme == "https" else b"\x86"
    out += b"\x84" if path == "/" else lit_with_name_index(4, path)
    out += lit_with_name_index(1, c.authority)
    for k, v in extra:
        out += lit(k, v)
    return out


class RawClient:
    """A connection that sends hand-made frames and only parses what comes
    back (no h2 state machine to object to the abuse)."""

    def __init__(self, args, settings=None):
        self.sock = connect(args)
        self.tracer = Tracer()
        self.authority = "%s:%d" % (args.sni if args.tls else args.host, args.port)
        self.scheme = "https" if args.tls else "http"
        self.sent_bytes = 0
        self.send_error = None
        s = {S.ENABLE_PUSH: 0}
        s.update(settings or {})
        self.sock.sendall(PREFACE + SettingsFrame(0, settings=s).serialize())

    def _handle(self, new):
        out = b""
        for _, f, _ in new:
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                out += SettingsFrame(0, flags=["ACK"]).serialize()
            elif isinstance(f, DataFrame) and len(f.data):
                n = len(f.data)
                out += WindowUpdateFrame(0, window_increment=n).serialize()
                out += WindowUpdateFrame(f.stream_id, window_increment=n).serialize()
        if out:
            try:
                self.sock.sendall(out)
            except OSError:
                pass

    def drain(self):
        """Reads whatever is already there, without waiting."""
        while not self.tracer.closed and readable(self.sock):
            data = recv_some(self.sock, self.tracer, 0.5)
            if not data:
                break
            self._handle(self.tracer.feed(data))

    def send(self, data, chunk=32768, send_timeout=5.0):
        """Sends data in pieces, reading replies in between; stops quietly
        if the server hangs up or stops reading. Returns bytes sent."""
        sent = 0
        self.sock.settimeout(send_timeout)
        for i in range(0, len(data), chunk):
            if self.tracer.closed:
                break
            try:
                self.sock.sendall(data[i:i + chunk])
            except socket.timeout:
                self.send_error = "send blocked for %.0fs (server stopped reading)" % send_timeout
                break
            except OSError as e:
                self.send_error = "send failed after %d bytes: %s" % (sent, e)
                break
            sent += len(data[i:i + chunk])
            self.drain()
        self.sent_bytes += sent
        return sent

    def read(self, until=lambda: False, timeout=3.0):
        deadline = time.monotonic() + timeout
        while not until() and not self.tracer.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            data = recv_some(self.sock, self.tracer, min(left, 0.5))
            if data is None:
                continue
            if not data:
                break
            self._handle(self.tracer.feed(data))
        return until()

    def ended(self, sid):
        for f in self.tracer.of_type((HeadersFrame, DataFrame, RstStreamFrame), sid):
            if isinstance(f, RstStreamFrame) or "END_STREAM" in f.flags:
                return True
        return False

    def status(self, sid):
        for _, f, hdrs in self.tracer.frames:
            if f.stream_id == sid and hdrs:
                d = dict(hdrs)
                if b":status" in d and not d[b":status"].startswith(b"1"):
                    return int(d[b":status"])
        return None

    def reset_code(self, sid):
        r = self.tracer.of_type(RstStreamFrame, sid)
        return r[0].error_code if r else None

    def gone(self):
        return self.tracer.closed is not None or self.tracer.goaway() is not None

    def fail(self, msg):
        return Fail("%s; frames: %s" % (msg, self.tracer.describe()))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- the site

class Site:
    """What the app behind the server offers (probed once)."""
    big = False        # /bytes/<n> and /upload exist
    body = staticmethod(body_numbered)
    probe_path = "/"
    probe_body = HELLO


def notes(*parts):
    NOTES.append(" ".join(str(p) for p in parts))


NOTES = []


def tree_rss_kib(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def serves_fresh(args, what="afterwards"):
    """A brand-new connection gets a normal GET answered."""
    t0 = time.monotonic()
    try:
        c = H2Client(args)
    except (OSError, Fail) as e:
        raise Fail("a fresh connection %s failed to open: %s" % (what, e))
    try:
        r = c.get(Site.probe_path, timeout=10)
        if r["status"] != 200 or r["data"] != Site.probe_body:
            raise c.fail("a fresh connection %s got status %s, %d bytes, reset %s"
                         % (what, r["status"], len(r["data"]), r["reset"]))
    finally:
        c.close()
    return time.monotonic() - t0


# ---------------------------------------------------------------- cases

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def basic_get(args):
    c = H2Client(args)
    path, want = ("/bytes/50000", body(50000)) if Site.big else ("/", HELLO)
    r = c.get(path)
    if r["status"] != 200 or r["data"] != want:
        raise c.fail("GET %s: status %s, %d bytes (want 200, %d exact bytes)"
                     % (path, r["status"], len(r["data"]), len(want)))
    c.close()


@case
def post_1mib_flow_controlled(args):
    """1 MiB upload in DATA frames that never exceed the window the server
    grants; proceeds only on its WINDOW_UPDATEs."""
    c = H2Client(args)
    # Let the server's SETTINGS in (its initial window) before sending.
    c.pump(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events), 2)
    payload = bytes(range(256)) * 4096
    path = "/upload" if Site.big else "/"
    sid = c.send_request("POST", path, [("content-length", str(len(payload)))], end_stream=False)
    sent, frames, stalls = 0, 0, 0
    deadline = time.monotonic() + 15
    while sent < len(payload):
        if time.monotonic() > deadline:
            raise c.fail("upload stuck at %d bytes: the server's window never reopened" % sent)
        room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size, len(payload) - sent)
        if room <= 0:
            stalls += 1
            c.pump(lambda: c.conn.local_flow_control_window(sid) > 0 or c.done(sid), 5)
            if c.done(sid) or c.tracer.closed:
                break
            continue
        c.conn.send_data(sid, payload[sent:sent + room], end_stream=sent + room == len(payload))
        sent += room
        frames += 1
        c.flush()
        if readable(c.sock):
            c.pump(timeout=0.01)
    r = c.wait(sid, 10)
    ok = upload_answer_matches(r["data"], payload) if Site.big else r["data"] == HELLO
    if r["status"] != 200 or not ok:
        raise c.fail("POST of 1 MiB (%d sent in %d DATA frames): status %s, body %r, reset %s"
                     % (sent, frames, r["status"], r["data"][:80], r["reset"]))
    notes("post_1mib_flow_controlled: %d DATA frames, waited for WINDOW_UPDATE %d times" % (frames, stalls))
    c.close()


@case
def large_response_tiny_window(args):
    """A 1 KiB initial stream window opened bit by bit: every byte arrives
    (h2 itself raises if the server overruns the window)."""
    if not Site.big:
        raise Skip("the app has no large response (/bytes/<n>)")
    c = H2Client(args, settings={S.INITIAL_WINDOW_SIZE: 1024})
    r = c.get("/bytes/300000", timeout=20)
    if r["status"] != 200 or r["data"] != body(300000):
        raise c.fail("status %s, %d of 300000 bytes, reset %s" % (r["status"], len(r["data"]), r["reset"]))
    biggest = max((len(f.data) for f in c.tracer.of_type(DataFrame)), default=0)
    if biggest > 1024:
        raise c.fail("a DATA frame of %d bytes in a 1 KiB window" % biggest)
    c.close()


@case
def stream_window_never_opened(args):
    """Stream window 1 KiB, no WINDOW_UPDATE: the server sends at most
    1 KiB; once the window opens the rest arrives, and a new stream works."""
    if not Site.big:
        raise Skip("the app has no large response (/bytes/<n>)")
    c = H2Client(args, settings={S.INITIAL_WINDOW_SIZE: 1024})
    sid = c.send_request("GET", "/bytes/100000")
    c.pump(timeout=1.5, ack=False)
    got = len(c.result(sid)["data"])
    if got > 1024:
        raise c.fail("server sent %d bytes into a 1 KiB stream window" % got)
    if c.tracer.closed or c.terminated:
        raise c.fail("connection ended while the window was shut")
    notes("stream_window_never_opened: %d bytes arrived while the 1 KiB window was shut" % got)
    c.ack_all()
    r = c.wait(sid, 15)
    if r["data"] != body(100000):
        raise c.fail("after opening the window: %d of 100000 bytes, status %s" % (len(r["data"]), r["status"]))
    r = c.get("/bytes/1000")
    if r["status"] != 200 or r["data"] != body(1000):
        raise c.fail("new stream afterwards: status %s" % r["status"])
    c.close()


@case
def connection_window_never_opened(args):
    """Stream windows 1 MiB but the connection window stays 65535: at most
    65535 bytes arrive; a second stream then waits, and both complete once
    the connection window is opened."""
    if not Site.big:
        raise Skip("the app has no large response (/bytes/<n>)")
    c = H2Client(args, settings={S.INITIAL_WINDOW_SIZE: 1 << 20})
    a = c.send_request("GET", "/bytes/1000000")
    c.pump(timeout=1.5, ack=False)
    got = len(c.result(a)["data"])
    if got > 65535:
        raise c.fail("server sent %d bytes into a 65535-byte connection window" % got)
    b = c.send_request("GET", "/bytes/1000")
    c.pump(timeout=0.7, ack=False)
    if len(c.result(b)["data"]) + got > 65535:
        raise c.fail("server overran the connection window on a second stream")
    if c.tracer.closed or c.terminated:
        raise c.fail("connection ended while its window was shut")
    notes("connection_window_never_opened: %d + %d bytes arrived while the connection window was shut"
          % (got, len(c.result(b)["data"])))
    c.ack_all()
    rb = c.wait(b, 10)
    ra = c.wait(a, 20)
    if rb["status"] != 200 or rb["data"] != body(1000):
        raise c.fail("second stream: status %s, %d bytes" % (rb["status"], len(rb["data"])))
    if ra["data"] != body(1000000):
        raise c.fail("first stream: %d of 1000000 bytes" % len(ra["data"]))
    c.close()


@case
def rst_mid_response(args):
    """RST_STREAM(CANCEL) in the middle of a 10 MiB response; the same
    connection then serves a new request."""
    if not Site.big:
        raise Skip("the app has no large response (/bytes/<n>)")
    c = H2Client(args)
    sid = c.send_request("GET", "/bytes/10485760")
    c.pump(lambda: c.result(sid)["data_frames"] > 0, 8)
    if not c.result(sid)["data_frames"]:
        raise c.fail("no DATA for the 10 MiB response")
    c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    c.flush()
    r = c.get("/bytes/1000")
    if r["status"] != 200 or r["data"] != body(1000):
        raise c.fail("request after the reset: status %s, %d bytes, reset %s"
                     % (r["status"], len(r["data"]), r["reset"]))
    if c.terminated:
        raise c.fail("GOAWAY after a client reset")
    c.close()


@case
def goaway_from_client(args):
    """GOAWAY(NO_ERROR) from the client: the server closes the connection,
    without a reset."""
    c = H2Client(args)
    c.pump(timeout=0.2)
    c.conn.close_connection()
    c.flush()
    c.pump(timeout=3)
    if not c.tracer.closed:
        raise c.fail("connection still open 3 s after the client's GOAWAY")
    if "reset" in c.tracer.closed or "error" in c.tracer.closed:
        raise c.fail("not a clean close")
    g = c.tracer.goaway()
    if g is not None and g.error_code != 0:
        raise c.fail("server answered with GOAWAY %s" % err_name(g.error_code))
    c.close()


@case
def goaway_with_request_in_flight(args):
    """A request then the client's GOAWAY(NO_ERROR, last=0) in one write:
    the client's own stream is still answered in full (GOAWAY's
    last-stream-id is about streams the server would start), then the
    connection closes. Raw frames: h2 refuses to read after its own GOAWAY."""
    c = RawClient(args)
    c.read(timeout=0.1)
    path, want = ("/bytes/200000", body(200000)) if Site.big else ("/", HELLO)
    c.send(HeadersFrame(1, request_block(c, path=path), flags=["END_HEADERS", "END_STREAM"]).serialize()
           + GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
    c.read(lambda: c.ended(1), 8)
    data = b"".join(bytes(f.data) for f in c.tracer.of_type(DataFrame, 1))
    if c.status(1) != 200 or data != want:
        rst = c.reset_code(1)
        raise c.fail("the in-flight request got status %s, %d of %d bytes%s"
                     % (c.status(1), len(data), len(want), (", RST_STREAM " + err_name(rst)) if rst is not None else ""))
    c.read(timeout=3)
    if not c.tracer.closed:
        raise c.fail("connection still open 3 s after the response")
    c.close()


def malformed(args, name, make):
    """A malformed request must get RST_STREAM(PROTOCOL_ERROR) or a 4xx,
    never a 2xx; it is a stream error (RFC 9113 §8.1.1), so the connection
    must go on serving."""
    c = H2Client(args)
    c.pump(timeout=0.05)
    sid = c.send_request(hdrs=make(c))
    r = c.wait(sid, 5)
    how = None
    if r["reset"] is not None:
        how = "RST_STREAM %s" % err_name(r["reset"])
        if r["reset"] != h2.errors.ErrorCodes.PROTOCOL_ERROR:
            raise c.fail("%s: RST_STREAM %s, want PROTOCOL_ERROR" % (name, err_name(r["reset"])))
    elif r["status"] is not None:
        how = "%d" % r["status"]
        if not 400 <= r["status"] < 500:
            raise c.fail("%s: answered %d" % (name, r["status"]))
    elif c.terminated is not None:
        g = c.tracer.goaway()
        if getattr(args, "lenient_malformed", False) and g is not None \
                and g.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR:
            c.close()
            return "GOAWAY PROTOCOL_ERROR last=%d: a connection error (RFC 9113 §5.4.1 allows it; " \
                "accepted by --lenient-malformed)" % g.last_stream_id
        raise c.fail("%s: connection error GOAWAY %s instead of a stream error (RFC 9113 §8.1.1)"
                     % (name, err_name(c.terminated.error_code)))
    else:
        raise c.fail("%s: no answer in 5 s" % name)
    after = c.get(Site.probe_path)
    if after["status"] != 200 or after["data"] != Site.probe_body:
        raise c.fail("%s (%s): the same connection then got status %s for a good request"
                     % (name, how, after["status"]))
    c.close()
    return how


def _pseudo_cases():
    def base(c):
        return [(":scheme", c.scheme), (":authority", c.authority)]
    p = lambda: Site.probe_path  # noqa: E731
    return {
        "missing :method": lambda c: [(":path", p())] + base(c),
        "missing :path": lambda c: [(":method", "GET")] + base(c),
        "missing :scheme": lambda c: [(":method", "GET"), (":path", p()), (":authority", c.authority)],
        "uppercase header name": lambda c: c.headers(path=p(), extra=[("X-Upper", "1")]),
        "connection: keep-alive": lambda c: c.headers(path=p(), extra=[("connection", "keep-alive")]),
        "te: gzip": lambda c: c.headers(path=p(), extra=[("te", "gzip")]),
        "duplicate :path": lambda c: c.headers(path=p()) + [(":path", "/other")],
        "pseudo-header after a regular one": lambda c: [(":method", "GET"), ("x-a", "1"), (":path", p())] + base(c),
        "unknown pseudo-header": lambda c: c.headers(path=p(), extra=[(":foo", "bar")]),
        "empty :path": lambda c: c.headers(path=""),
    }


def _register_malformed():
    for name, make in _pseudo_cases().items():
        slug = "malformed_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")
        while "__" in slug:
            slug = slug.replace("__", "_")

        def run(args, name=name, make=make, slug=slug):
            notes("%s: %s" % (slug, malformed(args, name, make)))
        run.__name__ = slug
        run.__doc__ = "Malformed request (%s): RST_STREAM PROTOCOL_ERROR or 4xx; connection still usable." % name
        case(run)


_register_malformed()


@case
def te_trailers_allowed(args):
    """`te: trailers` is the one TE value HTTP/2 allows: a normal 200."""
    c = H2Client(args)
    r = c.wait(c.send_request("GET", Site.probe_path, [("te", "trailers")]))
    if r["status"] != 200 or r["data"] != Site.probe_body:
        raise c.fail("te: trailers got status %s, reset %s" % (r["status"], r["reset"]))
    c.close()


@case
def options_star_answered_at_edge(args):
    """OPTIONS with :path * is a server-wide request: 200 with Allow,
    from the edge (the app must never see PATH_INFO "*")."""
    c = H2Client(args)
    sid = c.send_request("OPTIONS", "*")
    r = c.wait(sid)
    allow = r["headers"].get(b"allow", b"")
    if r["status"] != 200 or b"GET" not in allow.upper():
        raise c.fail("OPTIONS *: status %s, allow %r, body %r, reset %s (want 200 with an Allow header "
                     "listing GET)" % (r["status"], allow, r["data"][:60], r["reset"] and err_name(r["reset"])))
    if Site.big and r["data"] == b"not found\n":
        raise c.fail("OPTIONS * reached the app (its 404 body)")
    notes("options_star_answered_at_edge: 200, allow: %s, %d body bytes" % (allow.decode("latin-1"), len(r["data"])))
    c.close()


@case
def get_star_refused(args):
    """GET with :path * is malformed: 400 (or RST_STREAM PROTOCOL_ERROR)."""
    c = H2Client(args)
    r = c.wait(c.send_request("GET", "*"))
    if r["status"] == 400:
        pass
    elif r["reset"] == h2.errors.ErrorCodes.PROTOCOL_ERROR:
        notes("get_star_refused: RST_STREAM PROTOCOL_ERROR rather than 400")
    else:
        raise c.fail("GET *: status %s, reset %s, body %r" % (r["status"], r["reset"], r["data"][:60]))
    c.close()


def _flood_verdict(c, name, t_sent, within=5.0):
    c.read(lambda: c.gone(), within)
    g = c.tracer.goaway()
    if g is None and not c.tracer.closed:
        raise c.fail("%s: neither GOAWAY nor close within %.0f s after the flood (%d bytes sent%s)"
                     % (name, within, c.sent_bytes, (", " + c.send_error) if c.send_error else ""))
    how = ("GOAWAY %s last=%d" % (err_name(g.error_code), g.last_stream_id)) if g else c.tracer.closed
    notes("%s: server answered %s %.3fs after the flood began, %d bytes of flood sent%s"
          % (name, how, c.tracer.since(g, t_sent), c.sent_bytes, (" (" + c.send_error + ")") if c.send_error else ""))


@case
def continuation_flood(args):
    """HEADERS without END_HEADERS, then 20000 CONTINUATION frames each
    adding a header: GOAWAY or close within a few seconds."""
    c = RawClient(args)
    c.read(timeout=0.1)
    frames = [HeadersFrame(1, request_block(c, path=Site.probe_path), flags=["END_STREAM"]).serialize()]
    frag = ContinuationFrame(1, lit("x-c", "v" * 10)).serialize()
    frames.append(frag * 20000)
    t = time.monotonic()
    c.send(b"".join(frames))
    _flood_verdict(c, "continuation_flood", t)
    if c.status(1) == 200:
        raise c.fail("the flooded request was answered 200")
    c.close()


@case
def continuation_flood_empty(args):
    """The same with 60000 empty CONTINUATION frames, which add nothing to
    the header list (a size limit alone does not stop them)."""
    c = RawClient(args)
    c.read(timeout=0.1)
    data = HeadersFrame(1, request_block(c, path=Site.probe_path), flags=["END_STREAM"]).serialize()
    data += ContinuationFrame(1, b"").serialize() * 60000
    t = time.monotonic()
    c.send(data)
    _flood_verdict(c, "continuation_flood_empty", t)
    if c.status(1) == 200:
        raise c.fail("the flooded request was answered 200")
    c.close()


@case
def empty_data_flood(args):
    """30000 zero-length DATA frames without END_STREAM on one request:
    GOAWAY (ENHANCE_YOUR_CALM / PROTOCOL_ERROR) or at least the server keeps
    serving everyone else."""
    c = RawClient(args)
    c.read(timeout=0.1)
    path = "/upload" if Site.big else "/"
    c.send(HeadersFrame(1, request_block(c, "POST", path), flags=["END_HEADERS"]).serialize())
    t = time.monotonic()
    c.send(DataFrame(1, b"").serialize() * 30000)
    # Meanwhile other connections are served.
    serves_fresh(args, "during the flood")
    c.read(lambda: c.gone(), 2)
    g = c.tracer.goaway()
    if g is not None:
        notes("empty_data_flood: GOAWAY %s last=%d %.3fs after the flood began"
              % (err_name(g.error_code), g.last_stream_id, c.tracer.since(g, t)))
        if g.error_code not in (h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, h2.errors.ErrorCodes.PROTOCOL_ERROR):
            raise c.fail("GOAWAY %s, want ENHANCE_YOUR_CALM or PROTOCOL_ERROR" % err_name(g.error_code))
    elif c.tracer.closed:
        notes("empty_data_flood: connection closed without GOAWAY (%s)" % c.tracer.closed)
    else:
        # Still open: finish the request and see it answered.
        c.send(DataFrame(1, b"", flags=["END_STREAM"]).serialize())
        c.read(lambda: c.ended(1) or c.gone(), 5)
        notes("empty_data_flood: no GOAWAY; connection kept open, the request then got %s"
              % (c.status(1) or (c.reset_code(1) is not None and "RST " + err_name(c.reset_code(1)))
                 or "nothing"))
    c.close()


@case
def rapid_reset(args):
    """CVE-2023-44487: 10000 streams opened and reset at once. The server
    must keep serving a fresh connection promptly (not queue 10000 requests
    for the app); whether it sends GOAWAY is noted."""
    c = RawClient(args)
    c.read(timeout=0.1)
    block = request_block(c, path=Site.probe_path)
    pairs = []
    for i in range(10000):
        sid = 1 + 2 * i
        pairs.append(HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
                     + RstStreamFrame(sid, error_code=h2.errors.ErrorCodes.CANCEL).serialize())
    t = time.monotonic()
    c.send(b"".join(pairs))
    c.read(lambda: c.gone(), 2)
    g = c.tracer.goaway()
    answered = len([1 for _, f, h in c.tracer.frames if isinstance(f, HeadersFrame) and h])
    took = serves_fresh(args, "after the rapid reset")
    notes("rapid_reset: %s; %d responses started on the flooding connection; a fresh GET then took %.3fs"
          % (("GOAWAY %s last=%d %.3fs after the flood began" % (err_name(g.error_code), g.last_stream_id,
                                                               c.tracer.since(g, t)))
             if g else ("no GOAWAY, " + (c.tracer.closed or "connection left open")), answered, took))
    if took > 5:
        raise c.fail("a fresh GET took %.1fs after the rapid reset" % took)
    c.close()


@case
def hpack_bomb(args):
    """A 4000-byte header put in the dynamic table, then referenced 1000
    times (1 byte each, ~4 MB decoded): 431, RST_STREAM or GOAWAY, never 200;
    no crash."""
    c = RawClient(args)
    c.read(timeout=0.1)
    big = "a" * 4000
    first = request_block(c, path=Site.probe_path) + lit_insert("x-bomb", big)
    c.send(HeadersFrame(1, first, flags=["END_HEADERS", "END_STREAM"]).serialize())
    c.read(lambda: c.ended(1) or c.gone(), 5)
    if c.status(1) != 200:
        raise c.fail("the request that inserts the 4000-byte header got %s" % c.status(1))
    # Dynamic index 62 is now x-bomb.
    bomb = request_block(c, path=Site.probe_path) + b"\xbe" * 1000
    c.send(HeadersFrame(3, bomb, flags=["END_HEADERS", "END_STREAM"]).serialize())
    c.read(lambda: c.ended(3) or c.gone(), 5)
    st, rst, g = c.status(3), c.reset_code(3), c.tracer.goaway()
    if st is not None and st < 400:
        raise c.fail("the bomb got status %d" % st)
    if st is None and rst is None and g is None and not c.tracer.closed:
        raise c.fail("no answer to the bomb in 5 s")
    notes("hpack_bomb: %s" % ("status %d" % st if st else "RST_STREAM %s" % err_name(rst) if rst is not None
                              else "GOAWAY %s %r" % (err_name(g.error_code), bytes(g.additional_data)) if g
                              else c.tracer.closed))
    c.close()


@case
def ping_flood(args):
    """20000 PINGs in one burst: the server survives (GOAWAY
    ENHANCE_YOUR_CALM allowed) and others are served."""
    c = RawClient(args)
    c.read(timeout=0.1)
    t = time.monotonic()
    c.send(b"".join(PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize() for i in range(20000)))
    c.read(lambda: c.gone() or len(c.tracer.of_type(PingFrame)) >= 20000, 3)
    g = c.tracer.goaway()
    notes("ping_flood: %d PING ACKs back; %s" % (len(c.tracer.of_type(PingFrame)),
          ("GOAWAY %s %.3fs after the flood began" % (err_name(g.error_code), c.tracer.since(g, t))) if g
          else (c.tracer.closed or "connection open")))
    c.close()


@case
def settings_flood(args):
    """10000 SETTINGS frames in one burst: the server survives."""
    c = RawClient(args)
    c.read(timeout=0.1)
    one = SettingsFrame(0, settings={S.MAX_CONCURRENT_STREAMS: 100, S.INITIAL_WINDOW_SIZE: 65535}).serialize()
    t = time.monotonic()
    c.send(one * 10000)
    c.read(lambda: c.gone() or len([f for f in c.tracer.of_type(SettingsFrame) if "ACK" in f.flags]) >= 10001, 3)
    g = c.tracer.goaway()
    acks = len([f for f in c.tracer.of_type(SettingsFrame) if "ACK" in f.flags])
    notes("settings_flood: %d SETTINGS ACKs back; %s" % (acks, ("GOAWAY %s %.3fs after the flood began" % (
        err_name(g.error_code), c.tracer.since(g, t))) if g else (c.tracer.closed or "connection open")))
    c.close()


@case
def early_413_then_the_upload_is_drained(args):
    """A declared 100 MiB upload (over max_body): 413 at once, then the
    server keeps granting window and dropping what comes (h2's lingering
    close), so a client that waits for credit before reading its answer
    (httpx) is not stranded; no reset while it drains; the connection
    carries on."""
    c = H2Client(args)
    c.pump(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events), 2)
    sid = c.send_request("POST", "/upload" if Site.big else "/", [("content-length", str(100 << 20))],
                         end_stream=False)
    c.conn.send_data(sid, b"x" * 16000)
    c.flush()
    c.pump(lambda: c.done(sid), 5)
    r = c.result(sid)
    if r["status"] != 413:
        raise c.fail("status %s, want 413" % r["status"])
    # Four times the largest window the server has granted so far: only
    # fresh WINDOW_UPDATEs let this through.
    want = 4 * max(c.conn.remote_settings.initial_window_size, 65535)
    sent, deadline = 16000, time.monotonic() + 10
    while sent < want:
        if c.result(sid)["reset"] is not None or c.tracer.closed:
            raise c.fail("the upload was cut at %d bytes: reset %s, closed %s"
                         % (sent, c.result(sid)["reset"], c.tracer.closed))
        if time.monotonic() > deadline:
            raise c.fail("the window stayed shut at %d of %d bytes after the 413" % (sent, want))
        room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size, want - sent)
        if room <= 0:
            c.pump(lambda: c.conn.local_flow_control_window(sid) > 0 or c.result(sid)["reset"] is not None, 2)
            continue
        c.conn.send_data(sid, b"x" * room)
        sent += room
        c.flush()
    c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    c.flush()
    after = c.get(Site.probe_path)
    if after["status"] != 200 or after["data"] != Site.probe_body:
        raise c.fail("the connection then got %s" % after["status"])
    notes("early_413_then_the_upload_is_drained: %d bytes read and dropped after the 413" % sent)
    c.close()


# ---------------------------------------------------------------- runner

def probe(args):
    c = H2Client(args)
    try:
        r = c.get("/bytes/1000")
        for formula in BODIES:
            if r["status"] == 200 and r["data"] == formula(1000):
                Site.body = staticmethod(formula)
                Site.big, Site.probe_path, Site.probe_body = True, "/bytes/1000", formula(1000)
                return "app with /bytes and /upload (%s)" % formula.__name__
        r = c.get("/")
        if r["status"] == 200 and r["data"] == HELLO:
            return "hello app (large-response cases skipped)"
        raise c.fail("the site answers neither /bytes/1000 nor / as expected (status %s)" % r["status"])
    finally:
        c.close()


def _alarm(signum, frame):
    raise CaseTimeout()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--h2c", action="store_true", help="cleartext HTTP/2, prior knowledge")
    mode.add_argument("--tls", action="store_true", help="HTTP/2 over TLS (ALPN h2)")
    p.add_argument("--cafile", help="CA (or self-signed cert) to verify the server with")
    p.add_argument("--sni", default="localhost", help="TLS server name (default localhost)")
    p.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    p.add_argument("--pid", type=int, help="corral master pid: check it lives and watch its tree's RSS")
    p.add_argument("--only", help="comma-separated case names")
    p.add_argument("--case-timeout", type=float, default=15.0)
    p.add_argument("--lenient-malformed", action="store_true",
                   help="accept GOAWAY(PROTOCOL_ERROR) for a malformed request (a connection error) "
                        "where a stream error is expected")
    args = p.parse_args()
    if args.tls and not (args.cafile or args.insecure):
        p.error("--tls needs --cafile (or --insecure)")

    signal.signal(signal.SIGALRM, _alarm)
    t_all = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 10)
        print("site:", probe(args), flush=True)
    except (Fail, OSError, CaseTimeout) as e:
        print("FAIL probe: %s" % (e if not isinstance(e, CaseTimeout) else "timed out"), flush=True)
        sys.exit(1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)

    only = set(args.only.split(",")) if args.only else None
    rss0 = tree_rss_kib(args.pid) if args.pid else None
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    failed = []
    for fn in CASES:
        name = fn.__name__
        if only and name not in only:
            continue
        del NOTES[:]
        t = time.monotonic()
        verdict, why = "PASS", ""
        signal.setitimer(signal.ITIMER_REAL, args.case_timeout)
        try:
            fn(args)
            serves_fresh(args)
        except Skip as e:
            verdict, why = "SKIP", str(e)
        except Fail as e:
            verdict, why = "FAIL", str(e)
        except CaseTimeout:
            verdict, why = "FAIL", "hard timeout of %gs" % args.case_timeout
        except Exception as e:  # noqa: BLE001 - a bug in the case or an unexpected server reaction
            verdict, why = "FAIL", "%s: %s" % (type(e).__name__, e)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if args.pid and verdict != "SKIP":
            if not os.path.exists("/proc/%d" % args.pid):
                verdict, why = "FAIL", (why + "; " if why else "") + "the corral master (pid %d) is gone" % args.pid
            else:
                rss = tree_rss_kib(args.pid)
                NOTES.append("%s: server tree RSS %d MiB" % (name, rss // 1024))
                if rss - rss0 > 512 * 1024:
                    verdict = "FAIL"
                    why = (why + "; " if why else "") + "server RSS grew by %d MiB" % ((rss - rss0) // 1024)
        counts[verdict] += 1
        line = "%s %s" % (verdict, name) + (": " + why if why else "")
        print(line + "  (%.2fs)" % (time.monotonic() - t), flush=True)
        for n in NOTES:
            print("    note:", n, flush=True)
        if verdict == "FAIL":
            failed.append(name)
    print("%d passed, %d failed, %d skipped in %.1fs%s" % (
        counts["PASS"], counts["FAIL"], counts["SKIP"], time.monotonic() - t_all,
        (": " + ", ".join(failed)) if failed else ""), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
