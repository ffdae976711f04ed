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


async def idle(port, n):
    """Opens n sockets and leaves them open; returns them."""
    import websockets
    gate = asyncio.Semaphore(100)

    async def one():
        async with gate:
            return await websockets.connect(f"ws://127.0.0.1:{port}/", ping_interval=None,
                                            compression=None)

    return await asyncio.gather(*[one() for _ in range(n)])


async def broadcast(port, clients, messages):
    """`clients` sockets in /room; one sends `messages` texts; returns the
    deliveries and the seconds to the last one. A room lives in one worker
    (as in any multi-process server without a channel layer), so only the
    clients that landed on the sender's worker receive."""
    import websockets
    gate = asyncio.Semaphore(100)

    async def one():
        async with gate:
            return await websockets.connect(f"ws://127.0.0.1:{port}/room", max_size=None,
                                            compression=None, ping_interval=None)

    socks = await asyncio.gather(*[one() for _ in range(clients)])
    await asyncio.sleep(0.5)
    t = time.monotonic()
    sender = socks[0]
    got = [0] * len(socks)
    last = [t]

    async def drain(i, ws):
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 2)
                got[i] += 1
                last[0] = time.monotonic()
                if got[i] == messages:
                    return
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - not in the sender's room
            return

    tasks = [asyncio.create_task(drain(i, ws)) for i, ws in enumerate(socks)]
    for k in range(messages):
        await sender.send(f"broadcast {k}")
    await asyncio.gather(*tasks)
    # Clients on another worker wait out their timeout: count to the last delivery.
    took = last[0] - t
    delivered = sum(got)
    for ws in socks:
        await ws.close()
    return delivered, took


class Args:
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle", type=int, default=2000, help="idle sockets held for the memory figure")
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
                    # Broadcast: 1,000 clients, 20 messages from one of them.
                    delivered, took = asyncio.run(broadcast(srv.port, 1000, 20))
                    # Idle memory: --idle sockets held open.
                    rss0 = bench.rss_kib(srv.pids())
                    loop = asyncio.new_event_loop()
                    socks = loop.run_until_complete(idle(srv.port, a.idle))
                    time.sleep(1)
                    per_sock = (bench.rss_kib(srv.pids()) - rss0) * 1024 / len(socks)
                    for ws in socks:
                        loop.run_until_complete(ws.close())
                    loop.run_until_complete(asyncio.sleep(0.2))
                    loop.close()
                    print(f"  round {rnd + 1} {name}: echo {rate:.0f} msg/s, {cpu:.1f} CPU us/msg; "
                          f"broadcast {delivered / took:.0f} deliveries/s ({delivered} in {took:.2f}s); "
                          f"idle {per_sock / 1024:.1f} KiB per socket", flush=True)
                    results.setdefault(name, []).append((rate, cpu, delivered / took, per_sock))
                except Exception as e:  # noqa: BLE001 - report and go on
                    print(f"  round {rnd + 1} {name}: FAILED: {e}", flush=True)
                finally:
                    srv.stop()
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print("| server | echo msg/s | CPU µs/msg | corral ÷ server | broadcast deliveries/s | idle KiB/socket |")
    print("|---|---|---|---|---|---|")
    for name, (rate, cpu, bcast, per_sock) in med.items():
        ratio = "—" if name == "corral" or "corral" not in med else f"{med['corral'][0] / rate:.2f}×"
        print(f"| {name} | {rate:.0f} | {cpu:.1f} | {ratio} | {bcast:.0f} | {per_sock / 1024:.1f} |")


if __name__ == "__main__":
    main()
