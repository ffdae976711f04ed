"""One GET over HTTP/2 (h2c, prior knowledge) with the python `h2` package,
which reports what higher-level clients hide: informational heads and
trailers. Prints JSON: status, informational statuses, body length and
sha256, its first 4 KiB as text, trailers.

    python h2_get.py --port P --path /raw/trailers
"""
import argparse
import hashlib
import json
import socket

import h2.config
import h2.connection
import h2.events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--cookie", action="append", default=[],
                    help="a cookie field of its own, as browsers send them over h2")
    a = ap.parse_args()
    sock = socket.create_connection(("127.0.0.1", a.port), timeout=20)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", a.path), (":scheme", "http"),
                          (":authority", f"127.0.0.1:{a.port}")]
                      + [("cookie", c) for c in a.cookie], end_stream=True)
    sock.sendall(conn.data_to_send())
    out = {"status": None, "informational": [], "trailers": {}}
    body = bytearray()
    done = False
    while not done:
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.InformationalResponseReceived):
                out["informational"].append(dict(event.headers)[b":status"].decode())
            elif isinstance(event, h2.events.ResponseReceived):
                out["status"] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                out["trailers"] = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        sock.sendall(conn.data_to_send())
    out["body_len"] = len(body)
    out["body_sha256"] = hashlib.sha256(body).hexdigest()
    out["body"] = body[:4096].decode("utf-8", "replace")
    print(json.dumps(out))


main()
