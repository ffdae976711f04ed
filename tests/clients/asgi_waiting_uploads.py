"""Many uploads at once to an app that reads them only after 1.5 s, with
aiohttp: 100 posts of 2 MiB on one ASGI worker. Each must come back with
its own length and sha256, and the worker must not hold what the app has
not read yet beyond a small window per request (it stops reading and the
edge waits): it grows by less than 64 MiB, against ~110 MiB when every
request could buffer 1 MiB. Usage: asgi_waiting_uploads.py BASE_URL WORKER_PID"""
import asyncio
import hashlib
import os
import sys

import aiohttp

from checks import check, finish

COUNT, SIZE = 100, 2 << 20
base, worker = sys.argv[1], int(sys.argv[2])


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


async def post(session, body):
    async with session.post(f"{base}/raw/digest-later", data=body) as r:
        return r.status, await r.text()


async def main():
    bodies = [os.urandom(SIZE) for _ in range(COUNT)]
    before = peak = rss_mib(worker)
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=COUNT)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        posts = asyncio.gather(*(post(session, b) for b in bodies))
        while not posts.done():
            peak = max(peak, rss_mib(worker))
            await asyncio.sleep(0.05)
        answers = posts.result()
    right = sum(status == 200 and text == f"{SIZE} {hashlib.sha256(b).hexdigest()}"
                for (status, text), b in zip(answers, bodies))
    check(right == COUNT, f"{right} of {COUNT} uploads came back with their own sha256")
    grew = peak - before
    check(grew < 64, f"the worker grew {grew:.1f} MiB while {COUNT} x 2 MiB waited for the app")


asyncio.run(main())
finish()
