#!/usr/bin/env python3
"""What an idle client connection costs corral's edge, in resident memory.

Opens N connections to a running corral and measures the edge's RSS before
and after (the edge's pid from `corral status --json`): silent connections
(accepted, nothing sent), then keep-alive connections that made one request
and went quiet. Bounded: N connections to 127.0.0.1, closed at the end.

    python3 benches/idle_conns.py --config site.toml --port 8080 [-n 5000] [--tls-port 8443]
                                  [--only silent|keepalive|tls]

Each kind reuses what the one before it freed, so compare builds kind by
kind on a fresh server (`--only`).
"""
import argparse
import json
import resource
import socket
import ssl
import subprocess
import time
from pathlib import Path

CORRAL = Path(__file__).resolve().parent.parent / "target/release/corral"


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def edge_pid(config):
    out = subprocess.check_output([str(CORRAL), "status", "--config", config, "--json"])
    return json.loads(out)["edge_pid"]


def measure(what, edge, n, open_one, settle=2.0):
    before = rss_kib(edge)
    conns = [open_one() for _ in range(n)]
    time.sleep(settle)
    grown = rss_kib(edge) - before
    print(f"{what}: {n} connections, edge RSS +{grown / 1024:.1f} MiB, {grown / n:.1f} KiB each")
    for c in conns:
        c.close()
    time.sleep(settle)


def keepalive(port, wrap=None):
    def open_one():
        s = socket.create_connection(("127.0.0.1", port))
        if wrap:
            s = wrap(s)
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        return s
    return open_one


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-port", type=int)
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--only", choices=["silent", "keepalive", "tls"])
    a = ap.parse_args()
    run = lambda kind: a.only in (None, kind)  # noqa: E731
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.n + 1000), hard))
    edge = edge_pid(a.config)
    if run("silent"):
        measure("silent", edge, a.n, lambda: socket.create_connection(("127.0.0.1", a.port)))
    if run("keepalive"):
        measure("keep-alive after one GET", edge, a.n, keepalive(a.port))
    if a.tls_port and run("tls"):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        wrap = lambda s: ctx.wrap_socket(s, server_hostname="localhost")  # noqa: E731
        measure("TLS keep-alive after one GET", edge, min(a.n, 2000), keepalive(a.tls_port, wrap))


if __name__ == "__main__":
    main()
