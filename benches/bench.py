#!/usr/bin/env python3
"""Runs the same bounded wrk load against corral and its peers, alternating
servers round by round (A B A B ...) so machine drift hits all of them alike,
and prints req/s, latency, errors and peak RSS with corral's ratios.

Every server listens on 127.0.0.1 only and is stopped by pid when done.
Results are also written as JSON (target/bench-results.json).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "benches" / "apps"
CORRAL = ROOT / "target" / "release" / "corral"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def warm(port, path="/"):
    for _ in range(150):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} never answered 200")


def tree_pids(root):
    """root and all its descendants, from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    name = "?"

    def __init__(self, args, workdir):
        self.args, self.workdir, self.procs = args, workdir, []
        self.port = free_port()

    def spawn(self, cmd, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.workdir / f"{self.name}.err", "ab"),
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def pids(self):
        return [pid for p in self.procs for pid in tree_pids(p.pid)]

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


class Corral(Server):
    name = "corral"

    def start(self, app):
        cfg = self.workdir / "corral.toml"
        cfg.write_text(
            f'[server]\nlisten = ["127.0.0.1:{self.port}"]\n'
            f'[app]\nmodule = "{app}:application"\nchdir = "{APPS}"\nworkers = {self.args.workers}\n'
            f'[log]\naccess = "off"\nlevel = "warn"\n'
        )
        self.spawn([str(CORRAL), "serve", "--config", str(cfg)])
        wait_port(self.port)


class NginxGunicorn(Server):
    name = "nginx+gunicorn"

    def start(self, app):
        sock = self.workdir / "gunicorn.sock"
        self.spawn([str(Path(self.args.venv) / "bin" / "gunicorn"), "-w", str(self.args.workers),
                    "-b", f"unix:{sock}", "--chdir", str(APPS), f"{app}:application"])
        conf = self.workdir / "nginx.conf"
        conf.write_text(f"""
user root;
worker_processes {self.args.workers};
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/nginx.err warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream app {{ server unix:{sock}; }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://app;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
""")
        self.spawn(["nginx", "-c", str(conf), "-p", str(self.workdir)])
        wait_port(self.port)


SERVERS = {"corral": Corral, "nginx+gunicorn": NginxGunicorn}
SCENARIOS = {
    # name: (app module, path, connections)
    "hello": ("hello", "/", 64),
}


def run_wrk(port, path, conns, duration, threads=2):
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--latency",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return None
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return {"rps": rps, "p50_ms": lat(50), "p99_ms": lat(99), "errors": errors}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--servers", default="corral,nginx+gunicorn")
    ap.add_argument("scenarios", nargs="*", default=["hello"])
    args = ap.parse_args()
    servers = args.servers.split(",")
    results = {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        for scen in args.scenarios:
            app, path, conns = SCENARIOS[scen]
            runs = {s: [] for s in servers}
            for rnd in range(args.rounds):
                for sname in servers:
                    workdir = Path(tmp) / f"{scen}-{sname}-{rnd}"
                    workdir.mkdir()
                    srv = SERVERS[sname](args, workdir)
                    try:
                        srv.start(app)
                        warm(srv.port, path)
                        run_wrk(srv.port, path, conns, 2)  # warm-up
                        peak = 0
                        r = run_wrk(srv.port, path, conns, args.duration)
                        peak = max(peak, rss_kib(srv.pids()))
                        r["rss_mib"] = peak / 1024
                        runs[sname].append(r)
                        print(f"  {scen} round {rnd + 1} {sname}: {r['rps']:.0f} req/s", file=sys.stderr)
                    finally:
                        srv.stop()
            results[scen] = {
                s: {
                    "rps": statistics.median(r["rps"] for r in rs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                    "errors": sum(r["errors"] for r in rs),
                    "rss_mib": max(r["rss_mib"] for r in rs),
                    "rounds": rs,
                }
                for s, rs in runs.items()
            }
    out = ROOT / "target" / "bench-results.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\n| scenario | server | req/s | p50 ms | p99 ms | errors | RSS MiB | corral ÷ server |")
    print("|---|---|---|---|---|---|---|---|")
    for scen, by in results.items():
        base = by.get("corral", {}).get("rps")
        for s, r in by.items():
            ratio = f"{base / r['rps']:.2f}x" if base and s != "corral" else "—"
            print(f"| {scen} | {s} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                  f"{r['errors']} | {r['rss_mib']:.0f} | {ratio} |")
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
