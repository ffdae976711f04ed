"""Opens N WebSockets over HTTP/2 (RFC 8441 extended CONNECT, the python
`h2` package, plain-TCP h2c) on one connection and waits for each one's
answer. Prints one JSON line per stream: {"n": i, "status": code or null,
"reset": code or null}.

    python h2_ws_open.py --port P --path /ws/slow-accept --count 4
"""
import argparse
import json
import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--count", type=int, default=4)
    args = ap.parse_args()
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=30)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    # The server's SETTINGS must allow extended CONNECT before it is used.
    while not conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL):
        for _ in conn.receive_data(sock.recv(65536)):
            pass
        sock.sendall(conn.data_to_send())
    streams = {}
    for n in range(args.count):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                                (":scheme", "http"), (":path", args.path),
                                (":authority", "127.0.0.1"), ("sec-websocket-version", "13")])
        streams[sid] = {"n": n, "status": None, "reset": None}
    sock.sendall(conn.data_to_send())
    deadline = time.time() + 30
    while time.time() < deadline and any(s["status"] is None and s["reset"] is None
                                         for s in streams.values()):
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                streams[event.stream_id]["status"] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.StreamReset):
                streams[event.stream_id]["reset"] = int(event.error_code)
        sock.sendall(conn.data_to_send())
    for s in streams.values():
        print(json.dumps(s))


main()
