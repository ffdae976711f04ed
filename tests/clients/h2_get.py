"""One GET over HTTP/2 (h2c, prior knowledge) with the python `h2` package,
which reports what higher-level clients hide: informational heads,
trailers, and a body cut short by a reset. Prints JSON: status,
informational statuses, body length and sha256, its first 4 KiB as text,
trailers, and `end` ("stream ended" or "reset <error code>"); with
`--times N`, N requests on N connections, one JSON line each.

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
    ap.add_argument("--header", action="append", default=[],
                    help="name:value, another request field")
    ap.add_argument("--times", type=int, default=1)
    ap.add_argument("--body-out", help="write the (last) body's bytes to this file")
    a = ap.parse_args()
    for _ in range(a.times):
        print(json.dumps(get_once(a)), flush=True)


def get_once(a):
    sock = socket.create_connection(("127.0.0.1", a.port), timeout=20)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", a.path), (":scheme", "http"),
                          (":authority", f"127.0.0.1:{a.port}")]
                      + [("cookie", c) for c in a.cookie]
                      + [tuple(h.split(":", 1)) for h in a.header], end_stream=True)
    sock.sendall(conn.data_to_send())
    out = {"status": None, "informational": [], "trailers": {}, "end": None}
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
            elif isinstance(event, h2.events.StreamEnded):
                out["end"] = "stream ended"
                done = True
            elif isinstance(event, h2.events.StreamReset):
                out["end"] = f"reset {event.error_code.name}"
                done = True
        sock.sendall(conn.data_to_send())
    out["body_len"] = len(body)
    out["body_sha256"] = hashlib.sha256(body).hexdigest()
    out["body"] = body[:4096].decode("utf-8", "replace")
    sock.close()
    if a.body_out:
        with open(a.body_out, "wb") as f:
            f.write(body)
    return out


main()
