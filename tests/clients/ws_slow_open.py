"""Opens N WebSockets at once (python websockets) to a URL whose app takes
its time to accept, sends each a few bytes and reads the echo. Prints one
JSON line per socket: {"n": i, "ok": bool, "error": str}."""
import argparse
import asyncio
import json

import websockets


async def one(url, n):
    try:
        async with websockets.connect(url, open_timeout=30) as ws:
            payload = f"socket {n}".encode()
            await ws.send(payload)
            echoed = await asyncio.wait_for(ws.recv(), 10)
            return {"n": n, "ok": echoed == payload, "error": ""}
    except Exception as e:  # reported, not raised: the test counts them
        return {"n": n, "ok": False, "error": f"{type(e).__name__}: {e}"}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--count", type=int, default=4)
    args = ap.parse_args()
    for r in await asyncio.gather(*(one(args.url, n) for n in range(args.count))):
        print(json.dumps(r))


asyncio.run(main())
