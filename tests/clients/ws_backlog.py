"""A client that sends faster than the app receives (python `websockets`):
64 messages of 1 MiB to /ws/later, whose app does not receive until told.
Meanwhile the sender must be held back by flow control and neither the
worker nor the edge may hold the backlog; once the app receives, every
message must come back exact and in order.
Usage: ws_backlog.py PORT EDGE_PID WORKER_PID"""
import asyncio
import hashlib
import os
import sys
import urllib.request

import websockets

from checks import check, finish

COUNT, SIZE = 64, 1 << 20


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


async def main():
    port, edge, worker = (int(a) for a in sys.argv[1:4])
    before = {"edge": rss_mib(edge), "worker": rss_mib(worker)}
    messages = [os.urandom(SIZE) for _ in range(COUNT)]
    sent = 0
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/later", max_size=None,
                                  compression=None, ping_interval=None) as ws:
        async def sender():
            nonlocal sent
            for m in messages:
                await ws.send(m)
                sent += 1

        sending = asyncio.create_task(sender())
        await asyncio.sleep(3)
        check(sent < COUNT // 2, f"the sender is held back while the app does not receive "
                                 f"({sent} of {COUNT} MiB sent)")
        for name, pid in (("worker", worker), ("edge", edge)):
            grown = rss_mib(pid) - before[name]
            check(grown < 24, f"the {name} grew {grown:.1f} MiB with the backlog in front of it")
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/ws/later/go", method="POST", data=b""), timeout=10).read()
        echoed = [await asyncio.wait_for(ws.recv(), 30) for _ in range(COUNT)]
        await asyncio.wait_for(sending, 30)
        same = [hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
                for a, b in zip(messages, echoed)]
        check(all(same) and len(echoed) == COUNT,
              f"all {COUNT} messages echoed exact and in order ({sum(same)} matched)")
    finish()


asyncio.run(main())
