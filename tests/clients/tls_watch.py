"""HTTPS load across a certificate swap (tests/acme.rs).

THREADS threads each open a fresh TLS connection (so every handshake sees
the certificate the server holds at that moment, verified against the CA
given) and send PER_CONN keep-alive GETs on it. Every request is counted;
every certificate serial seen is recorded. Stops after SECONDS, or once
UNTIL distinct serials were seen and a second more has run on the last.
Prints one JSON object: sent, ok, failed, errors (the first few), serials
in the order first seen.
"""
import argparse
import http.client
import json
import socket
import ssl
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--host", required=True)
p.add_argument("--cafile", required=True)
p.add_argument("--expect", required=True, help="the body every GET must return")
p.add_argument("--seconds", type=float, default=30)
p.add_argument("--threads", type=int, default=4)
p.add_argument("--per-conn", type=int, default=5)
p.add_argument("--until", type=int, default=2)
args = p.parse_args()

ctx = ssl.create_default_context(cafile=args.cafile)
lock = threading.Lock()
counts = {"sent": 0, "ok": 0, "failed": 0}
errors = []
serials = []
stop_at = [time.monotonic() + args.seconds]


def note(ok, err=None):
    with lock:
        counts["sent"] += 1
        counts["ok" if ok else "failed"] += 1
        if err and len(errors) < 5:
            errors.append(err)


def one_connection():
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    try:
        tls = ctx.wrap_socket(raw, server_hostname=args.host)
    except Exception as e:
        raw.close()
        note(False, f"handshake: {e!r}")
        return
    serial = tls.getpeercert()["serialNumber"]
    with lock:
        if serial not in serials:
            serials.append(serial)
            if len(serials) >= args.until:
                stop_at[0] = min(stop_at[0], time.monotonic() + 1.0)
    conn = http.client.HTTPConnection(args.host, args.port, timeout=10)
    conn.sock = tls
    try:
        for _ in range(args.per_conn):
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode("utf-8", "replace")
                if resp.status == 200 and body == args.expect:
                    note(True)
                else:
                    note(False, f"{resp.status} {body[:80]!r}")
            except Exception as e:
                note(False, f"request: {e!r}")
                return
    finally:
        conn.close()


def run():
    while time.monotonic() < stop_at[0]:
        one_connection()


threads = [threading.Thread(target=run) for _ in range(args.threads)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({**counts, "errors": errors, "serials": serials}))
