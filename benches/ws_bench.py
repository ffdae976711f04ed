"""WebSocket echo round trips, side by side: corral, granian (--interface
asgi) and uvicorn (websockets implementation, uvloop), each with 2 workers
serving benches/apps/ws_echo.py. Every client connection sends a 64-byte
text message and waits for its echo, in a loop, for a fixed time. Reports
messages/s and the servers' CPU µs per message (from /proc).

Usage: target/bench-venv/bin/python benches/ws_bench.py --venv target/bench-venv [--conns 50] [--duration 5] [--rounds 2]
"""
import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench  # noqa: E402  (the servers, ports and /proc helpers)


async def client(port, conns, duration):
    import websockets
    stop = time.monotonic() + duration
    count = 0

    async def one():
        nonlocal count
        async with websockets.connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None) as ws:
            msg = "x" * 64
            while time.monotonic() < stop:
                await ws.send(msg)
                await ws.recv()
                count += 1

    await asyncio.gather(*[one() for _ in range(conns)])
    return count


class Args:
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    import tempfile
    args = Args()
    args.venv = str(Path(a.venv).resolve())
    args.workers = 2
    args.static_dir = "/tmp"
    args.certs = {}
    results = {}
    with tempfile.TemporaryDirectory(prefix="corral-ws-bench-") as tmp:
        for rnd in range(a.rounds):
            for name, cls in (("corral", bench.Corral), ("granian", bench.Granian), ("uvicorn", bench.Uvicorn)):
                work = Path(tmp) / f"{name}-{rnd}"
                work.mkdir()
                srv = cls(args, work)
                try:
                    srv.start("ws_echo")
                    time.sleep(1.0)
                    asyncio.run(client(srv.port, 5, 1))  # warm-up
                    pids = srv.pids()
                    before = bench.cpu_seconds(pids)
                    n = asyncio.run(client(srv.port, a.conns, a.duration))
                    used = bench.cpu_seconds(pids) - before
                    rate, cpu = n / a.duration, used * 1e6 / n
                    print(f"  round {rnd + 1} {name}: {rate:.0f} msg/s, {cpu:.1f} CPU us/msg", flush=True)
                    results.setdefault(name, []).append((rate, cpu))
                except Exception as e:  # noqa: BLE001 - report and go on
                    print(f"  round {rnd + 1} {name}: FAILED: {e}", flush=True)
                finally:
                    srv.stop()
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print("| server | msg/s | CPU µs/msg | corral ÷ server |\n|---|---|---|---|")
    for name, (rate, cpu) in med.items():
        ratio = "—" if name == "corral" or "corral" not in med else f"{med['corral'][0] / rate:.2f}×"
        print(f"| {name} | {rate:.0f} | {cpu:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
