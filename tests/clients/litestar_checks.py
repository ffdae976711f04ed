"""httpx and python websockets against the Litestar app
(tests/apps/litestar_app.py) behind corral: lifespan state, JSON, a hashed
POST body, a streamed body and a WebSocket echo. Prints one line per check
and "N failures" at the end."""
import argparse
import asyncio
import hashlib
import json
import time

import httpx
import websockets

from checks import check, finish


def stream_body(n, size):
    return "".join(f"chunk {i}:{'x' * size}\n" for i in range(n)).encode()


async def http(base):
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.get("/greet/ada", params={"times": 3})
        j = r.json()
        check(r.status_code == 200 and j["greeting"] == f"hello from lifespan in {j['pid']}",
              f"httpx: lifespan state reaches the request ({j.get('greeting')})")
        check(j["name"] == "ada" and j["shout"] == "ADA!ADA!ADA!", f"httpx: path and query params ({j})")
        r = await c.get("/greet/ada", params={"times": "many"})
        check(r.status_code == 400, f"httpx: a bad query param is Litestar's 400 ({r.status_code})")
        doc = json.dumps({f"k{i}": ["é", i, None] for i in range(40000)}).encode()
        r = await c.post("/sha256", content=doc, headers={"content-type": "application/json"})
        j = r.json()
        check(r.status_code == 201 and j["sha256"] == hashlib.sha256(doc).hexdigest()
              and j["length"] == len(doc) and len(j["keys"]) == 40000,
              f"httpx: {len(doc) // 1024} KiB JSON POST arrives whole ({r.status_code})")
        want = stream_body(6, 1000)
        t = time.monotonic()
        arrivals, got = [], b""
        async with c.stream("GET", "/stream/6", params={"size": 1000}) as r:
            check(r.headers.get("transfer-encoding") == "chunked", f"httpx: stream is chunked ({r.headers})")
            async for piece in r.aiter_bytes():
                arrivals.append(time.monotonic() - t)
                got += piece
        check(hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest(),
              f"httpx: streamed body, exact bytes ({len(got)} of {len(want)})")
        # Six chunks 50 ms apart: the first arrives long before the last.
        check(len(arrivals) > 1 and arrivals[-1] - arrivals[0] > 0.15,
              f"httpx: the stream arrived in {len(arrivals)} pieces over {arrivals[-1] - arrivals[0]:.2f}s")


async def ws(base):
    url = base.replace("http://", "ws://") + "/ws/echo"
    async with websockets.connect(url, max_size=None) as s:
        await s.send("héllo wörld")
        got = await s.recv()
        check(got == "litestar: héllo wörld", f"websockets: text echo ({got!r})")
        big = bytes((i * 31) % 256 for i in range(100 * 1024))
        await s.send(big)
        back = await s.recv()
        check(isinstance(back, bytes) and hashlib.sha256(back).digest() == hashlib.sha256(big).digest(),
              f"websockets: 100 KiB binary echo, exact bytes ({len(back)})")
        for i in range(100):
            await s.send(f"m{i}")
        got = [await s.recv() for _ in range(100)]
        check(got == [f"litestar: m{i}" for i in range(100)], "websockets: 100 messages in order")
    check(s.close_code == 1000, f"websockets: closed cleanly ({s.close_code})")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    a = ap.parse_args()
    await http(a.base)
    await ws(a.base)
    finish()


asyncio.run(main())
