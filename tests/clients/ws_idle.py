"""Opens N WebSockets to /ws/echo through corral with raw asyncio streams
(no per-socket library state), says READY, waits for a line on stdin, then
proves the last one still echoes and closes them all."""
import asyncio
import sys
import time

HANDSHAKE = (b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def one(port, gate):
    async with gate:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(HANDSHAKE)
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head[:40])
    return r, w


async def main():
    n, port = int(sys.argv[1]), int(sys.argv[2])
    gate = asyncio.Semaphore(200)
    t = time.monotonic()
    results = await asyncio.gather(*[one(port, gate) for _ in range(n)], return_exceptions=True)
    ok = [c for c in results if not isinstance(c, BaseException)]
    errors = [repr(c) for c in results if isinstance(c, BaseException)]
    print(f"OPEN {len(ok)} of {n} in {time.monotonic() - t:.1f}s; errors: {errors[:3]}", flush=True)
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    r, w = ok[-1]
    mask, payload = b"\x01\x02\x03\x04", b"still"
    w.write(bytes([0x81, 0x80 | len(payload)]) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    await w.drain()
    echo = await asyncio.wait_for(r.readexactly(7), 10)
    print("ECHO", "ok" if echo == b"\x81\x05still" else repr(echo), flush=True)
    for _, w in ok:
        w.close()


asyncio.run(main())
