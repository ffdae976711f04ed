"""HTTP/2 edge cases against corral, scripted with the python `h2` package.

    python h2_cases.py --port P (--h2c | --tls --cafile ca.pem)

The site runs tests/apps/clients_app.py. After every hostile case a fresh
connection must still get a normal answer. Prints PASS/FAIL per case; the
exit code is the number of failures.
"""
import argparse
import hashlib
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame

LINE = b"corral client matrix line, fairly compressible text\n"


def body(n):
    return (LINE * (n // len(LINE) + 1))[:n]


class Client:
    """One HTTP/2 connection; lenient on what it sends, so bad frames go out."""

    def __init__(self, args, window=None):
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
        if args.tls:
            ctx = ssl.create_default_context(cafile=args.cafile)
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        cfg = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                        normalize_outbound_headers=False, validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.authority = "127.0.0.1:%d" % args.port
        self.scheme = "https" if args.tls else "http"

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(self, method="GET", path="/", extra=()):
        return [(":method", method), (":scheme", self.scheme), (":authority", self.authority),
                (":path", path)] + list(extra)

    def events(self, until, limit=10.0, ack=True):
        """Reads events until `until(events)` is true; returns them all."""
        got = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not until(got):
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                got.append("closed")
                break
            try:
                evs = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                got.append(("protocol-error", e))
                break
            for ev in evs:
                if ack and isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            got.extend(evs)
            try:
                self.flush()
            except OSError:
                got.append("closed")  # the server hung up on us
                break
        return got

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def ended(sid):
    return lambda evs: any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
                           for e in evs) or "closed" in evs or any(isinstance(e, h2.events.ConnectionTerminated) for e in evs)


def response(evs, sid):
    status, data = None, b""
    for e in evs:
        if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
            status = int(dict(e.headers)[b":status"])
        if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
            data += e.data
    return status, data


def get(c, path, sid=None):
    sid = sid or c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, c.headers(path=path), end_stream=True)
    c.flush()
    return response(c.events(ended(sid)), sid)


def still_serving(args):
    c = Client(args)
    status, data = get(c, "/bytes/1000")
    c.close()
    if status != 200 or data != body(1000):
        raise AssertionError("a fresh connection got %s (%d bytes) afterwards" % (status, len(data)))


def case_basic(args):
    c = Client(args)
    status, data = get(c, "/bytes/50000")
    assert status == 200 and hashlib.sha256(data).digest() == hashlib.sha256(body(50000)).digest(), status
    # An upload over several DATA frames, within the server's window.
    sid = c.conn.get_next_available_stream_id()
    payload = bytes(range(256)) * 4096  # 1 MiB
    c.conn.send_headers(sid, c.headers("POST", "/upload", [("content-length", str(len(payload)))]))
    sent = 0
    while sent < len(payload):
        room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
        if room == 0:
            c.events(lambda evs: any(isinstance(e, h2.events.WindowUpdated) for e in evs), limit=5)
            continue
        chunk = payload[sent:sent + room]
        sent += len(chunk)
        c.conn.send_data(sid, chunk, end_stream=sent == len(payload))
        c.flush()
    status, data = response(c.events(ended(sid)), sid)
    want = "%d %s\n" % (len(payload), hashlib.sha256(payload).hexdigest())
    assert status == 200 and data.decode() == want, (status, data[:80])
    c.close()


def case_small_window(args):
    """A 1 KiB initial window, opened bit by bit: every byte arrives."""
    c = Client(args, window=1024)
    status, data = get(c, "/bytes/300000")
    assert status == 200 and data == body(300000), (status, len(data))
    c.close()


def case_window_never_opened(args):
    """The server never sends past the window; after a reset the
    connection still serves."""
    c = Client(args, window=1024)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, c.headers(path="/bytes/100000"), end_stream=True)
    c.flush()
    evs = c.events(lambda evs: False, limit=1.5, ack=False)
    got = sum(len(e.data) for e in evs if isinstance(e, h2.events.DataReceived))
    assert got <= 1024, "server sent %d bytes into a 1 KiB window" % got
    c.conn.reset_stream(sid)
    c.flush()
    status, data = get(c, "/bytes/100")
    assert status == 200 and data == body(100), status
    c.close()


def case_rst_mid_response(args):
    c = Client(args)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, c.headers(path="/bytes/10485760"), end_stream=True)
    c.flush()
    c.events(lambda evs: any(isinstance(e, h2.events.DataReceived) for e in evs))
    c.conn.reset_stream(sid)
    c.flush()
    status, data = get(c, "/bytes/1000")
    assert status == 200 and data == body(1000), status
    c.close()


def case_goaway(args):
    """A client's GOAWAY (no error) ends the connection calmly: no reset."""
    c = Client(args)
    c.conn.close_connection()
    c.flush()
    c.sock.settimeout(1)
    try:
        while c.sock.recv(65536):
            pass
    except socket.timeout:
        pass
    except ConnectionResetError as e:
        raise AssertionError("the server reset the connection after GOAWAY: %s" % e)
    c.close()


def refused(args, headers, name):
    c = Client(args)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, headers(c), end_stream=True)
    c.flush()
    evs = c.events(ended(sid), limit=5)
    status, _ = response(evs, sid)
    reset = any(isinstance(e, h2.events.StreamReset) for e in evs)
    gone = "closed" in evs or any(isinstance(e, h2.events.ConnectionTerminated) for e in evs)
    if not (reset or gone or (status is not None and 400 <= status < 500)):
        raise AssertionError("%s: got status %s" % (name, status))
    c.close()


def case_pseudo_header_errors(args):
    base = [(":scheme", "http"), (":authority", "a")]
    bad = {
        "missing :method": lambda c: [(":path", "/bytes/1")] + base,
        "missing :path": lambda c: [(":method", "GET")] + base,
        "uppercase header name": lambda c: c.headers(path="/bytes/1", extra=[("X-Upper", "1")]),
        "connection-specific header": lambda c: c.headers(path="/bytes/1", extra=[("connection", "keep-alive")]),
        "te other than trailers": lambda c: c.headers(path="/bytes/1", extra=[("te", "gzip")]),
        "duplicate :path": lambda c: c.headers(path="/bytes/1") + [(":path", "/x")],
        "pseudo-header after a regular one": lambda c: [(":method", "GET"), ("x-a", "1"), (":path", "/bytes/1")] + base,
        "GET with :path *": lambda c: c.headers(path="*"),
    }
    for name, headers in bad.items():
        refused(args, headers, name)


def case_options_star(args):
    c = Client(args)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, c.headers("OPTIONS", "*"), end_stream=True)
    c.flush()
    evs = c.events(ended(sid))
    hdrs = {}
    for e in evs:
        if isinstance(e, h2.events.ResponseReceived):
            hdrs = dict(e.headers)
    assert hdrs.get(b":status") == b"200" and b"GET" in hdrs.get(b"allow", b""), hdrs
    c.close()


def case_continuation_flood(args):
    c = Client(args)
    block = c.conn.encoder.encode(c.headers(path="/bytes/1"))
    frames = HeadersFrame(1, block[:1]).serialize()
    for _ in range(20000):
        frames += ContinuationFrame(1, b"\x40\x01a\x01b").serialize()
    try:
        c.sock.sendall(frames)
    except OSError:
        pass  # the server may close mid-flood: that is a pass
    c.events(lambda evs: "closed" in evs, limit=5)
    c.close()


def case_empty_data_flood(args):
    c = Client(args)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, c.headers("POST", "/upload"))
    c.flush()
    try:
        c.sock.sendall(b"".join(DataFrame(sid, b"").serialize() for _ in range(20000)))
    except OSError:
        pass
    c.events(lambda evs: "closed" in evs, limit=3)
    c.close()


def case_rapid_reset(args):
    c = Client(args)
    try:
        for _ in range(2000):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, c.headers(path="/bytes/1000"), end_stream=True)
            c.conn.reset_stream(sid)
        c.flush()
    except (OSError, h2.exceptions.ProtocolError):
        pass
    c.events(lambda evs: "closed" in evs, limit=3)
    c.close()


def case_hpack_bomb(args):
    """One 4 KiB header in the dynamic table, referenced 2000 times."""
    c = Client(args)
    big = [("x-bomb", "a" * 4000)]
    first = c.conn.encoder.encode(c.headers(path="/bytes/1", extra=big))
    sid = 1
    c.sock.sendall(HeadersFrame(sid, first, flags=["END_HEADERS", "END_STREAM"]).serialize())
    ref = c.conn.encoder.encode(big)  # now an index into the dynamic table
    block = c.conn.encoder.encode(c.headers(path="/bytes/1")) + ref * 2000
    try:
        c.sock.sendall(HeadersFrame(3, block[:16000], flags=["END_HEADERS", "END_STREAM"]).serialize())
    except OSError:
        pass
    c.events(lambda evs: "closed" in evs, limit=3)
    c.close()


def case_early_413_resets_the_upload(args):
    """An upload refused before it is read: 413, END_STREAM, then
    RST_STREAM(NO_ERROR) so the client stops sending (RFC 9113 §8.1)."""
    c = Client(args)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, c.headers("POST", "/upload", [("content-length", str(100 << 20))]))
    c.conn.send_data(sid, b"x" * 16000)
    c.flush()
    evs = c.events(lambda evs: any(isinstance(e, h2.events.StreamReset) for e in evs), limit=5)
    status, _ = response(evs, sid)
    resets = [e.error_code for e in evs if isinstance(e, h2.events.StreamReset) and e.stream_id == sid]
    assert status == 413, status
    assert resets == [0], "want RST_STREAM(NO_ERROR) after the 413, got %s" % resets
    # The connection carries on.
    status, data = get(c, "/bytes/100")
    assert status == 200 and data == body(100), status
    c.close()


def case_ping_and_settings_flood(args):
    c = Client(args)
    try:
        for i in range(5000):
            c.conn.ping(i.to_bytes(8, "big"))
            if i % 5 == 0:
                c.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100})
        c.flush()
    except (OSError, h2.exceptions.ProtocolError):
        pass
    c.events(lambda evs: "closed" in evs, limit=2, ack=False)
    c.close()


CASES = [case_basic, case_small_window, case_window_never_opened, case_rst_mid_response, case_goaway,
         case_pseudo_header_errors, case_options_star, case_continuation_flood, case_empty_data_flood,
         case_rapid_reset, case_hpack_bomb, case_early_413_resets_the_upload, case_ping_and_settings_flood]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--h2c", action="store_true")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--cafile")
    args = p.parse_args()
    failures = 0
    for case in CASES:
        name = case.__name__[5:]
        try:
            case(args)
            still_serving(args)
            print("PASS", name, flush=True)
        except Exception as e:
            failures += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e), flush=True)
    print("%d failures" % failures, flush=True)
    sys.exit(failures)


if __name__ == "__main__":
    main()
