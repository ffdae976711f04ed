"""Third-party clients against corral's ASGI worker (tests/apps/asgi_app.py):
httpx (h1, and h2 over h2c), aiohttp and requests. Exits non-zero on the
first wrong byte; prints one line per check and "N failures" at the end."""
import argparse
import asyncio
import hashlib
import time

import aiohttp
import httpx
import requests

from checks import check, finish


async def concurrency(base, n, seconds, workers):
    """n sleeping requests at once on `workers` ASGI workers finish together."""
    async with httpx.AsyncClient(base_url=base, timeout=30,
                                 limits=httpx.Limits(max_connections=n)) as c:
        t = time.monotonic()
        rs = await asyncio.gather(*[c.get(f"/sleep/{seconds}") for _ in range(n)])
        took = time.monotonic() - t
    codes = {r.status_code for r in rs}
    check(codes == {200}, f"httpx: {n} concurrent /sleep/{seconds} all 200 ({codes})")
    # Serially this would take n/workers * seconds.
    check(took < seconds * 4, f"httpx: {n} concurrent sleeps took {took:.2f}s on {workers} worker(s)")


async def upload_download(base, http2):
    data = bytes((i * 13) % 256 for i in range(8 * 1024 * 1024 + 17))
    want = hashlib.sha256(data).hexdigest()
    async with httpx.AsyncClient(base_url=base, timeout=60, http1=not http2, http2=http2) as c:
        r = await c.post("/sha256", content=data)
        j = r.json()
        tag = "h2" if http2 else "h1"
        check(r.status_code == 200 and j["sha256"] == want,
              f"httpx {tag}: 8 MiB upload arrives whole ({j.get('sha256', '')[:12]})")
        check(j["pieces"] > 1, f"httpx {tag}: the app read the upload in {j['pieces']} pieces (more_body)")
        r = await c.get("/bytes/3000000")
        check(r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == r.headers["x-sha256"],
              f"httpx {tag}: 3 MB download, exact bytes")
        if http2:
            check(r.http_version == "HTTP/2", f"httpx: spoke {r.http_version}")


async def streaming(base):
    """Chunks arrive as the app makes them, not at the end."""
    async with aiohttp.ClientSession() as s:
        t = time.monotonic()
        arrivals = []
        async with s.get(base + "/stream?n=5&gap=0.3") as r:
            async for line in r.content:
                if line.strip():
                    arrivals.append(time.monotonic() - t)
        check(len(arrivals) == 5, f"aiohttp: 5 streamed lines ({len(arrivals)})")
        check(arrivals and arrivals[0] < 0.6 and arrivals[-1] > 1.0,
              f"aiohttp: first line after {arrivals[0]:.2f}s, last after {arrivals[-1]:.2f}s")


def with_requests(base):
    r = requests.get(base + "/", timeout=10)
    check(r.status_code == 200 and r.json()["state"] == "hello from lifespan",
          "requests: lifespan state reaches the request")
    r = requests.head(base + "/bytes/1000", timeout=10)
    check(r.status_code == 200 and r.content == b"", "requests: HEAD has no body")
    r = requests.get(base + "/error", timeout=10)
    check(r.status_code == 500, f"requests: an exception in a view is a 500 ({r.status_code})")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    await concurrency(a.base, 50, 1.0, a.workers)
    await upload_download(a.base, http2=False)
    await upload_download(a.base, http2=True)
    await streaming(a.base)
    with_requests(a.base)
    finish()


asyncio.run(main())
