#!/usr/bin/env python3
"""RSS and PSS of the whole server process tree for the benchmark Flask app,
corral with app.preload off/on vs gunicorn without/with --preload, same
worker count. PSS counts shared pages once, split between their users, so
it shows what copy-on-write sharing saves. Run via `benches/run.sh`'s venv:
    python3 benches/memory.py --venv target/bench-venv [--workers 4]
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import APPS, CORRAL, free_port, tree_pids, wait_port  # noqa: E402


def rollup(pids):
    rss = pss = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                k, v = line.split(":", 1) if ":" in line else (line, "")
                if k == "Rss":
                    rss += int(v.split()[0])
                elif k == "Pss":
                    pss += int(v.split()[0])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def measure(cmd, port, tmp):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "err.log", "ab"),
                            start_new_session=True)
    try:
        wait_port(port)
        for _ in range(200):  # touch every worker a few times
            urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10).read()
        time.sleep(1)
        return rollup(tree_pids(proc.pid))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()
    venv = Path(a.venv).resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for preload in (False, True):
            port = free_port()
            cfg = tmp / f"corral-{preload}.toml"
            cfg.write_text(f'[server]\nlisten = ["127.0.0.1:{port}"]\n[app]\nmodule = "flask_app:app"\n'
                           f'chdir = "{APPS}"\nvirtualenv = "{venv}"\nworkers = {a.workers}\n'
                           f'preload = {str(preload).lower()}\n[log]\naccess = "off"\nlevel = "warn"\n')
            rows.append((f"corral preload={str(preload).lower()}",
                         *measure([str(CORRAL), "serve", "--config", str(cfg)], port, tmp)))
            port = free_port()
            cmd = [str(venv / "bin" / "gunicorn"), "-w", str(a.workers), "-b", f"127.0.0.1:{port}",
                   "--chdir", str(APPS), "flask_app:app"] + (["--preload"] if preload else [])
            rows.append((f"gunicorn {'--preload' if preload else '(no preload)'}", *measure(cmd, port, tmp)))
    print(f"| server ({a.workers} workers, Flask) | RSS MiB (sum) | PSS MiB (sum) |")
    print("|---|---|---|")
    for name, rss, pss in rows:
        print(f"| {name} | {rss:.0f} | {pss:.0f} |")


if __name__ == "__main__":
    main()
