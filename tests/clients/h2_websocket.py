"""A WebSocket over HTTP/2 (RFC 8441 extended CONNECT) against corral's
/ws/echo (tests/apps/asgi_app.py), with third-party pieces only: the python
`h2` package for the connection and `wsproto` for the WebSocket frames
(permessage-deflate included). While the socket is open, ordinary GETs run
as other streams of the same connection. Prints one line per check and
"N failures" at the end.

    python h2_websocket.py --port P --cafile cert.pem [--host localhost]
"""
import argparse
import hashlib
import socket
import ssl

import h2.config
import h2.connection
import h2.events
import h2.settings
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

from checks import check, finish


class Client:
    """One TLS connection speaking h2; `pump` reads until `until()` holds."""

    def __init__(self, host, port, cafile):
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.alpn = self.sock.selected_alpn_protocol()
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.host, self.port = host, port
        self.heads, self.data, self.ended, self.reset = {}, {}, set(), {}
        self.end_stream = set()  # ended by END_STREAM, not by a reset
        self.settings = {}
        self.flush()

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self, until):
        while not until():
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("corral closed the connection")
            for ev in self.conn.receive_data(data):
                self.on(ev)
            self.flush()

    def on(self, ev):
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            for code, change in ev.changed_settings.items():
                self.settings[code] = change.new_value
        elif isinstance(ev, h2.events.ResponseReceived):
            self.heads[ev.stream_id] = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.ended.add(ev.stream_id)
            self.end_stream.add(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self.reset[ev.stream_id] = ev.error_code
            self.ended.add(ev.stream_id)

    def request(self, method, path, extra=(), end=True):
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":scheme", "https"), (":path", path),
                (":authority", f"{self.host}:{self.port}")] + list(extra)
        self.conn.send_headers(sid, head, end_stream=end)
        self.flush()
        return sid


class Socket:
    """A WebSocket on one h2 stream: wsproto frames inside DATA frames."""

    def __init__(self, client, sid, deflate):
        self.client, self.sid = client, sid
        self.proto = FrameProtocol(client=True, extensions=[deflate] if deflate else [])
        self.seen = 0

    def send(self, data):
        self.client.conn.send_data(self.sid, data)
        self.client.flush()

    def message(self):
        """The next whole message (text or bytes), or a CloseReason."""
        parts = []
        while True:
            for frame in self.proto.received_frames():
                if frame.opcode is Opcode.CLOSE:
                    return frame.payload
                parts.append(frame.payload)
                if frame.message_finished:
                    return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)
            buf = self.client.data.get(self.sid, b"")
            if len(buf) > self.seen:
                self.proto.receive_bytes(bytes(buf[self.seen:]))
                self.seen = len(buf)
                continue
            n = len(buf)
            self.client.pump(lambda: len(self.client.data.get(self.sid, b"")) > n
                             or self.sid in self.client.ended)
            if self.sid in self.client.ended and len(self.client.data.get(self.sid, b"")) == n:
                raise ConnectionError("the stream ended mid-message")


def open_socket(c, deflate):
    offer = [("sec-websocket-version", "13"), ("sec-websocket-protocol", "echo.v1")]
    ext = None
    if deflate:
        ext = PerMessageDeflate()
        offer.append(("sec-websocket-extensions", f"{ext.name}; {ext.offer()}"))
    sid = c.request("CONNECT", "/ws/echo", [(":protocol", "websocket")] + offer, end=False)
    c.pump(lambda: sid in c.heads or sid in c.ended)
    head = c.heads.get(sid, {})
    if ext is not None and "sec-websocket-extensions" in head:
        ext.finalize(head["sec-websocket-extensions"])
    return sid, head, Socket(c, sid, ext if ext is not None and ext.enabled() else None)


def get(c, path):
    sid = c.request("GET", path)
    c.pump(lambda: sid in c.ended)
    return c.heads.get(sid, {}).get(":status"), bytes(c.data.get(sid, b""))


def close(c, ws, sid, code, reason, end_stream):
    """Sends a close frame (on the stream's last DATA frame with
    `end_stream`). The server answers it, then ends the stream with
    END_STREAM: never a reset, not even RST_STREAM(NO_ERROR), which
    Chromium reports as 1006."""
    c.conn.send_data(sid, ws.proto.close(code, reason), end_stream=end_stream)
    c.flush()
    reply = ws.message()
    how = "with END_STREAM" if end_stream else "alone"
    check(isinstance(reply, tuple) and reply[0] == code, f"a close sent {how} is answered: {reply}")
    c.pump(lambda: sid in c.ended)
    get(c, "/seen")  # a round trip: anything sent right behind the END_STREAM has come
    check(sid in c.end_stream and sid not in c.reset,
          f"then the stream ends with END_STREAM, not reset (reset: {c.reset.get(sid)})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--host", default="localhost")
    a = ap.parse_args()
    c = Client(a.host, a.port, a.cafile)
    check(c.alpn == "h2", f"ALPN chose {c.alpn}")
    c.pump(lambda: h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL in c.settings)
    check(c.settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1,
          "the server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL")

    sid, head, ws = open_socket(c, deflate=True)
    check(head.get(":status") == "200", f"extended CONNECT answered {head.get(':status')}")
    check(head.get("sec-websocket-protocol") == "echo.v1",
          f"subprotocol {head.get('sec-websocket-protocol')}")
    check("sec-websocket-accept" not in head and "upgrade" not in head,
          "no HTTP/1.1 handshake fields on the h2 answer")
    agreed = head.get("sec-websocket-extensions", "")
    check(agreed.startswith("permessage-deflate"), f"compression agreed ({agreed})")

    ws.send(ws.proto.send_data("héllo over h2", fin=True))
    check(ws.message() == "héllo over h2", "text echo")
    big = bytes((i * 31) % 256 for i in range(1024 * 1024))
    ws.send(ws.proto.send_data(big, fin=True))
    back = ws.message()
    check(hashlib.sha256(back).digest() == hashlib.sha256(big).digest(),
          f"1 MiB binary echo, exact bytes ({len(back)})")

    # The page's other requests share the connection while the socket is open.
    for i in range(3):
        status, body = get(c, "/seen")
        check(status == "200" and body.startswith(b"{"), f"GET /seen #{i} beside the socket: {status}")
    ws.send(ws.proto.send_data("still here", fin=True))
    check(ws.message() == "still here", "the socket still echoes after the GETs")

    # A second socket on the same connection, without compression.
    sid2, head2, ws2 = open_socket(c, deflate=False)
    check(head2.get(":status") == "200" and "sec-websocket-extensions" not in head2,
          "a second socket on the same connection, uncompressed")
    ws2.send(ws2.proto.send_data(b"two", fin=True))
    ws.send(ws.proto.send_data(b"one", fin=True))
    check((ws2.message(), ws.message()) == (b"two", b"one"), "both sockets echo their own")

    # A clean close, which the server waits for the client to end (RFC 8441 §5).
    close(c, ws, sid, CloseReason.NORMAL_CLOSURE, "bye", end_stream=False)
    c.conn.end_stream(sid)
    c.flush()
    get(c, "/seen")
    check(sid not in c.reset, f"no reset after the client's END_STREAM ({c.reset.get(sid)})")

    # Refusals on the same connection.
    sid3 = c.request("CONNECT", "/ws/echo", [(":protocol", "smtp")], end=False)
    c.pump(lambda: sid3 in c.ended)
    check(c.heads.get(sid3, {}).get(":status") == "501", "a protocol other than websocket: 501")
    sid4 = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid4, [(":method", "CONNECT"), (":authority", "example.com:443")],
                        end_stream=False)
    c.flush()
    c.pump(lambda: sid4 in c.ended)
    check(c.heads.get(sid4, {}).get(":status") == "405", "a plain CONNECT (a tunnel): 405")
    status, _ = get(c, "/seen")
    check(status == "200", "the connection still serves after the refusals")
    # A close frame on the client's last DATA frame: still answered.
    close(c, ws2, sid2, CloseReason.GOING_AWAY, "leaving", end_stream=True)
    finish()


main()
