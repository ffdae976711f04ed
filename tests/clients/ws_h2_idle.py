"""Opens N WebSockets to /ws/echo through corral over HTTP/2 (RFC 8441
extended CONNECT, 100 streams per TLS connection) with the python `h2`
package, says OPEN and READY, waits for a line on stdin, then proves the
last one still echoes.

    python ws_h2_idle.py N TLS_PORT
"""
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events

PER_CONNECTION = 100


class Conn:
    def __init__(self, port):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # a local test certificate
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.flush()
        self.data = {}
        self.pump(lambda ev: isinstance(ev, h2.events.RemoteSettingsChanged))

    def flush(self):
        out = self.h2.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self, done):
        """Reads until an event satisfies `done`."""
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            hit = False
            for ev in self.h2.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                hit = hit or done(ev)
            self.flush()
            if hit:
                return

    def open(self, n):
        """Opens n sockets; returns how many got 200."""
        sids = []
        for _ in range(n):
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(sid, [
                (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                (":path", "/ws/echo"), (":authority", "localhost"),
                ("sec-websocket-version", "13")])
            sids.append(sid)
        self.flush()
        answered, ok = set(), 0

        def done(ev):
            nonlocal ok
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.StreamReset)):
                answered.add(ev.stream_id)
                if isinstance(ev, h2.events.ResponseReceived) and dict(ev.headers).get(":status") == "200":
                    ok += 1
            return len(answered) == n
        self.pump(done)
        self.last = sids[-1]
        return ok


def main():
    n, port = int(sys.argv[1]), int(sys.argv[2])
    conns, ok, errors = [], 0, []
    while len(conns) * PER_CONNECTION < n:
        try:
            c = Conn(port)
            ok += c.open(min(PER_CONNECTION, n - len(conns) * PER_CONNECTION))
            conns.append(c)
        except Exception as e:  # reported, not raised: the test reads the line
            errors.append(repr(e))
            break
    print(f"OPEN {ok} of {n}; errors: {errors[:3]}", flush=True)
    print("READY", flush=True)
    sys.stdin.readline()
    c = conns[-1]
    mask, payload = b"\x01\x02\x03\x04", b"still"
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))
    c.h2.send_data(c.last, frame)
    c.flush()
    c.pump(lambda ev: len(c.data.get(c.last, b"")) >= 7)
    echo = bytes(c.data[c.last])
    print("ECHO", "ok" if echo == b"\x81\x05still" else repr(echo), flush=True)


main()
