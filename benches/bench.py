#!/usr/bin/env python3
"""Runs the same bounded wrk load against corral and its peers, alternating
servers round by round (A B A B ...) so machine drift hits all of them alike,
and prints req/s, latency, errors, peak RSS and CPU time per request (all of
a server's processes, user + system) with corral's ratios. CPU per request
is the steadier figure on a shared machine: a neighbour's load moves
req/s by 10-15% between rounds, but changes little what each request costs.

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


def cpu_seconds(pids):
    """User + system CPU time of `pids` so far."""
    ticks = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            ticks += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def ctx_switches(pids):
    """Context switches (voluntary + involuntary) of every thread of `pids` so far."""
    total = 0
    for p in pids:
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                for line in open(f"/proc/{p}/task/{t}/status"):
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
            except OSError:
                pass
    return total


def syscalls_during(pids, run):
    """Runs `run()` while `perf stat` counts the system calls `pids` make
    (the raw_syscalls tracepoint: a little overhead on every call, so the
    CPU figures of such a run read a few percent high). Returns (run's
    result, count or None when perf cannot count here)."""
    out = tempfile.NamedTemporaryFile(prefix="corral-perf-", suffix=".csv", delete=False)
    out.close()
    try:
        perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", out.name, "-e", "raw_syscalls:sys_enter",
                                 "-p", ",".join(str(p) for p in pids)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return run(), None
    time.sleep(0.2)  # attached before the load starts
    try:
        result = run()
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=10)
    count = None
    for line in Path(out.name).read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "raw_syscalls:sys_enter" and fields[0].isdigit():
            count = int(fields[0])
    os.unlink(out.name)
    return result, count


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
        self.tls_port = None

    def start_nginx_proxy(self, sock, upstream="", location=""):
        conf = self.workdir / "nginx.conf"
        conf.write_text(nginx_proxy_conf(self, sock, upstream, location))
        self.spawn(["nginx", "-c", str(conf), "-p", str(self.workdir)])

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


ASGI_APPS = ("asgi_hello", "fastapi_app", "ws_echo")


def module_spec(app):
    return f"{app}:app" if app == "flask_app" or app in ASGI_APPS else f"{app}:application"


class Corral(Server):
    name = "corral"

    def start(self, app, threads=1, tls=False):
        cfg = self.workdir / "corral.toml"
        venv = Path(self.args.venv).resolve()
        text = (
            f'[server]\nlisten = ["127.0.0.1:{self.port}"]\n'
            + "".join(f"{line}\n" for line in self.server_lines())
            + f'[app]\nmodule = "{module_spec(app)}"\nchdir = "{APPS}"\nworkers = {self.args.workers}\n'
            f'threads = {threads}\nvirtualenv = "{venv}"\nqueue_size = 100000\n'
            # Room for the WebSocket bench's idle sockets (9/10 of it: 10,800 on 2 workers).
            + ('concurrency = 6000\n' if app == "ws_echo" else '')
            + f'[[static]]\nurl = "/static/"\ndir = "{self.args.static_dir}"\n'
            f'[compression]\nenabled = false\n'
            f'[log]\naccess = "off"\nlevel = "warn"\n'
        )
        if tls:
            self.tls_port = free_port()
            text += (f'[tls]\nlisten = ["127.0.0.1:{self.tls_port}"]\n[[tls.cert]]\n'
                     f'cert = "{self.args.certs[tls][0]}"\nkey = "{self.args.certs[tls][1]}"\n')
        cfg.write_text(text)
        self.spawn([str(self.binary()), "serve", "--config", str(cfg)])
        wait_port(self.port)

    def binary(self):
        return CORRAL

    def server_lines(self):
        return []


class CorralBaseline(Corral):
    """Another corral binary (`--baseline`), e.g. a build of main before a
    change, or the same one with other `[server]` settings
    (`--baseline-server`), measured in the same rounds: an A/B on one host."""
    name = "corral-baseline"

    def binary(self):
        return Path(self.args.baseline).resolve() if self.args.baseline else CORRAL

    def server_lines(self):
        return self.args.baseline_server


class Gunicorn(Server):
    name = "gunicorn"

    def start(self, app, threads=1, tls=False):
        extra = ["-k", "gthread", "--threads", str(threads)] if threads > 1 else []
        self.spawn([str(Path(self.args.venv) / "bin" / "gunicorn"), "-w", str(self.args.workers), *extra,
                    "-b", f"127.0.0.1:{self.port}", "--chdir", str(APPS), module_spec(app)])
        wait_port(self.port)


class Granian(Server):
    name = "granian"

    def start(self, app, threads=1, tls=False):
        extra = ["--blocking-threads", str(threads)] if threads > 1 else []
        interface = "asgi" if app in ASGI_APPS else "wsgi"
        self.spawn([str(Path(self.args.venv) / "bin" / "granian"), "--interface", interface,
                    "--workers", str(self.args.workers), *extra, "--host", "127.0.0.1",
                    "--port", str(self.port), *([] if app == "ws_echo" else ["--no-ws"]),
                    module_spec(app)], cwd=str(APPS))
        wait_port(self.port)


class Uvicorn(Server):
    """uvicorn with its fastest parts (httptools, uvloop)."""
    name = "uvicorn"

    def start(self, app, threads=1, tls=False):
        self.spawn([str(Path(self.args.venv) / "bin" / "uvicorn"), "--workers", str(self.args.workers),
                    "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
                    "--host", "127.0.0.1", "--port", str(self.port), module_spec(app)], cwd=str(APPS))
        wait_port(self.port)


class GunicornUvicorn(Server):
    """gunicorn's arbiter with uvicorn workers (`-k uvicorn_worker.UvicornWorker`)."""
    name = "gunicorn+uvicorn"

    def start(self, app, threads=1, tls=False):
        self.spawn([str(Path(self.args.venv) / "bin" / "gunicorn"), "-w", str(self.args.workers),
                    "-k", "uvicorn_worker.UvicornWorker", "-b", f"127.0.0.1:{self.port}",
                    "--chdir", str(APPS), module_spec(app)])
        wait_port(self.port)


class GunicornAsgi(Server):
    """gunicorn's own ASGI worker (`-k asgi`, gunicorn 25.1 and later; uvloop
    when installed, as its `--asgi-loop auto` picks)."""
    name = "gunicorn-asgi"

    def start(self, app, threads=1, tls=False):
        self.spawn([str(Path(self.args.venv) / "bin" / "gunicorn"), "-w", str(self.args.workers),
                    "-k", "asgi", "-b", f"127.0.0.1:{self.port}",
                    "--chdir", str(APPS), module_spec(app)])
        wait_port(self.port)


def nginx_proxy_conf(server, sock, upstream="", location=""):
    """nginx in front of an app server's Unix socket: the shared config,
    with the deployment's own upstream and location directives."""
    return f"""
user root;
worker_processes {server.args.workers};
pid {server.workdir}/nginx.pid;
error_log {server.workdir}/nginx.err warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;  # corral has no per-connection cap (nginx: 1000, and h2load does not reconnect)
    upstream app {{ server unix:{sock}; {upstream} }}
    server {{
        listen 127.0.0.1:{server.port};
        location / {{
            proxy_pass http://app;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;{location}
        }}
    }}
}}
"""


class NginxUvicorn(Server):
    """nginx in front of uvicorn on a Unix socket, as the uvicorn docs deploy it."""
    name = "nginx+uvicorn"

    def start(self, app, threads=1, tls=False):
        sock = self.workdir / "uvicorn.sock"
        self.spawn([str(Path(self.args.venv) / "bin" / "uvicorn"), "--workers", str(self.args.workers),
                    "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
                    "--uds", str(sock), module_spec(app)], cwd=str(APPS))
        # HTTP/1.1 keep-alive to the upstream, as uvicorn's deployment docs set it.
        self.start_nginx_proxy(sock, upstream="keepalive 64;", location="""
            proxy_http_version 1.1;
            proxy_set_header Connection "";""")
        wait_port(self.port)


class Uwsgi(Server):
    name = "uwsgi"

    def start(self, app, threads=1, tls=False):
        extra = ["--threads", str(threads)] if threads > 1 else []
        mod = "flask_app:app" if app == "flask_app" else f"{app}:application"
        self.spawn([str(Path(self.args.venv) / "bin" / "uwsgi"), "--http-socket", f"127.0.0.1:{self.port}",
                    "--processes", str(self.args.workers), *extra, "--chdir", str(APPS),
                    "--module", mod, "--master", "--disable-logging", "--die-on-term"])
        wait_port(self.port)


class Nginx(Server):
    """nginx alone: static files and TLS."""
    name = "nginx"

    def start(self, app, threads=1, tls=False):
        tls_block = ""
        if tls:
            self.tls_port = free_port()
            tls_block = f"""
    server {{
        listen 127.0.0.1:{self.tls_port} ssl http2;
        ssl_certificate {self.args.certs[tls][0]};
        ssl_certificate_key {self.args.certs[tls][1]};
        ssl_session_cache shared:SSL:10m;
        ssl_protocols TLSv1.2 TLSv1.3;  # corral's; nginx 1.22's default lacks 1.3
        location /static/ {{ alias {self.args.static_dir}/; }}
        location / {{ return 200 "Hello, World!"; }}
    }}"""
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
    keepalive_requests 1000000;  # corral has no per-connection cap (nginx: 1000, and h2load does not reconnect)
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{self.port};
        location /static/ {{ alias {self.args.static_dir}/; }}
        location / {{ return 200 "Hello, World!"; }}
    }}{tls_block}
}}
""")
        self.spawn(["nginx", "-c", str(conf), "-p", str(self.workdir)])
        wait_port(self.port)


class NginxGunicorn(Server):
    name = "nginx+gunicorn"

    def start(self, app, threads=1, tls=False):
        sock = self.workdir / "gunicorn.sock"
        extra = ["-k", "gthread", "--threads", str(threads)] if threads > 1 else []
        self.spawn([str(Path(self.args.venv) / "bin" / "gunicorn"), "-w", str(self.args.workers), *extra,
                    "-b", f"unix:{sock}", "--chdir", str(APPS), module_spec(app)])
        self.start_nginx_proxy(sock, location="""
            proxy_set_header X-Forwarded-Proto $scheme;""")
        wait_port(self.port)


SERVERS = {"corral": Corral, "corral-baseline": CorralBaseline, "nginx+gunicorn": NginxGunicorn, "gunicorn": Gunicorn,
           "granian": Granian, "uwsgi": Uwsgi, "nginx": Nginx, "uvicorn": Uvicorn,
           "gunicorn+uvicorn": GunicornUvicorn, "gunicorn-asgi": GunicornAsgi,
           "nginx+uvicorn": NginxUvicorn}
ASGI_PEERS = ["granian", "uvicorn", "gunicorn+uvicorn", "gunicorn-asgi", "nginx+uvicorn"]
# name: app module, path, connections, threads per worker, peers, options
SCENARIOS = {
    "hello": dict(app="hello", path="/", conns=64, peers=["nginx+gunicorn", "granian", "uwsgi"]),
    "flask": dict(app="flask_app", path="/json", conns=64, peers=["nginx+gunicorn", "granian", "uwsgi"]),
    "asgi-hello": dict(app="asgi_hello", path="/", conns=64, peers=ASGI_PEERS),
    "fastapi": dict(app="fastapi_app", path="/json", conns=64, peers=ASGI_PEERS),
    "io": dict(app="io_app", path="/", conns=32, threads=16, peers=["gunicorn", "granian", "uwsgi"]),
    # 2 workers x 16 threads at 10 ms = ~3200 req/s capacity; 4x the connections.
    "overload": dict(app="io_app", path="/", conns=128, threads=16, peers=["nginx+gunicorn", "granian"]),
    "static-small": dict(app="hello", path="/static/small.bin", conns=64, peers=["nginx"]),
    "static-large": dict(app="hello", path="/static/large.bin", conns=8, peers=["nginx"]),
    # tls=: the certificate's key type (ECDSA P-256 or RSA 2048), same for both servers.
    "tls": dict(app="hello", path="/static/small.bin", conns=64, tls="ec", peers=["nginx"]),
    "tls-handshake": dict(app="hello", path="/static/small.bin", conns=16, tls="ec", close=True, peers=["nginx"]),
    "tls-rsa": dict(app="hello", path="/static/small.bin", conns=64, tls="rsa", peers=["nginx"]),
    "tls-handshake-rsa": dict(app="hello", path="/static/small.bin", conns=16, tls="rsa", close=True,
                              peers=["nginx"]),
    "h2": dict(app="hello", path="/static/small.bin", conns=16, tls="ec", h2=True, peers=["nginx"]),
    "slowloris": dict(app="hello", path="/", conns=64, slowloris=500, peers=[]),
}


def run_wrk(url, conns, duration, threads=2, extra=()):
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--latency", *extra, url],
        capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    done = re.search(r"(\d+) requests in", out)

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
    return {"rps": rps, "p50_ms": lat(50), "p99_ms": lat(99), "errors": errors,
            "requests": int(done.group(1)) if done else 0}


def run_h2load(url, conns, duration):
    out = subprocess.run(["h2load", "-c", str(conns), "-m", "10", "-D", str(duration), url],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    rps = float(m.group(1)) if m else 0.0
    failed = re.search(r"(\d+) failed", out)
    lat = re.search(r"time for request:\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)", out)
    mean = None
    if lat:
        v, u = float(lat.group(1)), lat.group(2)
        mean = v / 1000 if u == "us" else v * 1000 if u == "s" else v
    done = re.search(r"requests: (\d+) total", out)
    return {"rps": rps, "p50_ms": mean, "p99_ms": None, "errors": int(failed.group(1)) if failed else 0,
            "requests": int(done.group(1)) if done else 0}


class Slowloris:
    """Holds `n` connections open with a half-sent request, one byte a second."""

    def __init__(self, port, n):
        self.socks = []
        for _ in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
                self.socks.append(s)
            except OSError:
                break
        self.stop = False
        import threading
        self.t = threading.Thread(target=self.drip, daemon=True)
        self.t.start()

    def drip(self):
        while not self.stop:
            for s in list(self.socks):
                try:
                    s.sendall(b"a")
                except OSError:
                    self.socks.remove(s)
            time.sleep(1)

    def close(self):
        self.stop = True
        for s in self.socks:
            s.close()


def measure(srv, sc, args):
    scheme, port = ("https", srv.tls_port) if sc.get("tls") else ("http", srv.port)
    url = f"{scheme}://127.0.0.1:{port}{sc['path']}"
    if sc.get("h2"):
        run_h2load(url, sc["conns"], 2)
        load = lambda: run_h2load(url, sc["conns"], args.duration)
    else:
        extra = ["-H", "Connection: close"] if sc.get("close") else []
        run_wrk(url, sc["conns"], 2, extra=extra)  # warm-up
        load = lambda: run_wrk(url, sc["conns"], args.duration, extra=extra)
    pids = srv.pids()
    before, switches = cpu_seconds(pids), ctx_switches(pids)
    if args.syscalls:
        r, calls = syscalls_during(pids, load)
    else:
        r, calls = load(), None
    used = cpu_seconds(pids) - before
    switches = ctx_switches(pids) - switches
    n = r["requests"]
    r["cpu_us"] = used * 1e6 / n if n else None
    r["cs_per_req"] = switches / n if n else None
    r["syscalls_per_req"] = calls / n if n and calls is not None else None
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline", help="another corral binary to measure beside this one (A/B)")
    ap.add_argument("--baseline-server", action="append", default=[], metavar="LINE",
                    help='a [server] line for the baseline, e.g. "edge_threads = 1" (repeatable; '
                         'without --baseline, the same binary)')
    ap.add_argument("--only-corral", action="store_true", help="skip the peers (with --baseline: a plain A/B)")
    ap.add_argument("--syscalls", action="store_true",
                    help="count each server's system calls per request with perf (adds a little CPU)")
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = ap.parse_args()
    args.venv = str(Path(args.venv).resolve())
    results = {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        tmp = Path(tmp)
        static = tmp / "static"
        static.mkdir()
        (static / "small.bin").write_bytes(os.urandom(4096))
        (static / "large.bin").write_bytes(os.urandom(10 << 20))
        args.static_dir = str(static)
        args.certs = {}
        for kind, newkey in (("ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                             ("rsa", ["-newkey", "rsa:2048"])):
            cert, key = str(tmp / f"cert-{kind}.pem"), str(tmp / f"key-{kind}.pem")
            subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", cert,
                            "-days", "2", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
            args.certs[kind] = (cert, key)
        for scen in args.scenarios:
            sc = SCENARIOS[scen]
            ab = args.baseline or args.baseline_server
            servers = ["corral"] + (["corral-baseline"] if ab else []) \
                + ([] if args.only_corral else sc["peers"])
            runs = {s: [] for s in servers}
            for rnd in range(args.rounds):
                for sname in servers:
                    workdir = tmp / f"{scen}-{sname}-{rnd}"
                    workdir.mkdir()
                    srv = SERVERS[sname](args, workdir)
                    loris = None
                    try:
                        srv.start(sc["app"], threads=sc.get("threads", 1), tls=sc.get("tls", False))
                        warm(srv.port, "/static/small.bin" if sname == "nginx" else sc["path"])
                        if sc.get("slowloris"):
                            base = measure(srv, sc, args)
                            loris = Slowloris(srv.port, sc["slowloris"])
                            time.sleep(1)
                        r = measure(srv, sc, args)
                        if sc.get("slowloris"):
                            r["kept"] = r["rps"] / base["rps"] if base["rps"] else 0
                            r["held"] = len(loris.socks)
                        r["rss_mib"] = rss_kib(srv.pids()) / 1024
                        runs[sname].append(r)
                        cpu = f", {r['cpu_us']:.1f} CPU us/req" if r.get("cpu_us") else ""
                        cpu += f", {r['cs_per_req']:.2f} cs/req" if r.get("cs_per_req") is not None else ""
                        cpu += f", {r['syscalls_per_req']:.1f} syscalls/req" if r.get("syscalls_per_req") else ""
                        print(f"  {scen} round {rnd + 1} {sname}: {r['rps']:.0f} req/s{cpu}"
                              + (f", kept {r['kept']:.0%} with {r['held']} slowloris" if "kept" in r else ""),
                              file=sys.stderr, flush=True)
                    except Exception as e:  # a peer that cannot run here is reported, not fatal
                        print(f"  {scen} round {rnd + 1} {sname}: FAILED: {e}", file=sys.stderr, flush=True)
                    finally:
                        if loris:
                            loris.close()
                        srv.stop()
            results[scen] = {}
            for s, rs in runs.items():
                if not rs:
                    continue
                med = lambda k: statistics.median(r[k] for r in rs if r.get(k) is not None) if any(r.get(k) is not None for r in rs) else None
                results[scen][s] = {"rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
                                    "cpu_us": med("cpu_us"), "cs_per_req": med("cs_per_req"),
                                    "syscalls_per_req": med("syscalls_per_req"),
                                    "errors": sum(r["errors"] for r in rs), "rss_mib": max(r["rss_mib"] for r in rs),
                                    "kept": med("kept"), "rounds": rs}
    out = ROOT / "target" / "bench-results.json"
    out.write_text(json.dumps(results, indent=2))
    fmt = lambda v, f="{:.2f}": "—" if v is None else f.format(v)
    print("| scenario | server | req/s | p50 ms | p99 ms | errors | RSS MiB | CPU µs/req "
          "| ctx switches/req | syscalls/req | corral ÷ server |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scen, by in results.items():
        base = by.get("corral", {}).get("rps")
        for s, r in by.items():
            ratio = f"{base / r['rps']:.2f}x" if base and r["rps"] and s != "corral" else "—"
            if s == "corral" and r.get("kept") is not None:
                ratio = f"kept {r['kept']:.0%} of its throughput"
            print(f"| {scen} | {s} | {r['rps']:.0f} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                  f"{r['errors']} | {r['rss_mib']:.0f} | {fmt(r.get('cpu_us'), '{:.1f}')} | "
                  f"{fmt(r.get('cs_per_req'))} | {fmt(r.get('syscalls_per_req'), '{:.1f}')} | {ratio} |")
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
