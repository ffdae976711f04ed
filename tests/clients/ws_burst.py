"""Opens N WebSockets to /ws/echo through corral at once (python
`websockets`), says READY, waits for a line on stdin, then echoes on every
one of them for two seconds and prints how many messages came back."""
import asyncio
import sys
import time

import websockets


async def main():
    n, port = int(sys.argv[1]), int(sys.argv[2])
    conns = await asyncio.gather(*[websockets.connect(f"ws://127.0.0.1:{port}/ws/echo", compression=None)
                                   for _ in range(n)])
    print(f"OPEN {len(conns)} of {n}", flush=True)
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    end = time.monotonic() + 2.0

    async def echo(ws):
        count = 0
        while time.monotonic() < end:
            await ws.send("ping")
            if await ws.recv() != "ping":
                raise RuntimeError("wrong echo")
            count += 1
        return count

    counts = await asyncio.gather(*[echo(ws) for ws in conns])
    print(f"ECHOED {sum(counts)} min {min(counts)}", flush=True)
    for ws in conns:
        await ws.close()


asyncio.run(main())
