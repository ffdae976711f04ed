"""Third-party WebSocket clients against corral (tests/apps/asgi_app.py):
python websockets, websocket-client and aiohttp, over ws:// and wss://.
Prints one line per check and "N failures" at the end."""
import argparse
import asyncio
import hashlib
import json
import ssl

import aiohttp
import websocket  # websocket-client
import websockets

from checks import check, finish


async def echo(url, ctx, tag):
    async with websockets.connect(url + "/ws/echo", ssl=ctx, subprotocols=["echo.v1"],
                                  max_size=None) as ws:
        check(ws.subprotocol == "echo.v1", f"{tag} websockets: subprotocol {ws.subprotocol}")
        await ws.send("héllo wörld")
        check(await ws.recv() == "héllo wörld", f"{tag} websockets: text echo")
        big = bytes((i * 31) % 256 for i in range(3 * 1024 * 1024))
        await ws.send(big)
        back = await ws.recv()
        check(hashlib.sha256(back).digest() == hashlib.sha256(big).digest(),
              f"{tag} websockets: 3 MiB binary echo, exact bytes")
        # Many small messages in flight at once come back in order.
        for i in range(500):
            await ws.send(f"m{i}")
        got = [await ws.recv() for _ in range(500)]
        check(got == [f"m{i}" for i in range(500)], f"{tag} websockets: 500 messages in order")
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)
        check(True, f"{tag} websockets: ping answered")
        # python websockets offers permessage-deflate by default.
        agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        check(agreed.startswith("permessage-deflate"), f"{tag} websockets: compression agreed ({agreed})")
        doc = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(20000)])
        await ws.send(doc)
        check(await ws.recv() == doc, f"{tag} websockets: {len(doc) // 1024} KiB compressed JSON echo")
    async with websockets.connect(url + "/ws/echo", ssl=ctx, compression=None) as ws:
        agreed = ws.response.headers.get("Sec-WebSocket-Extensions")
        check(agreed is None, f"{tag} websockets: no compression when not offered ({agreed})")
        await ws.send("plain " * 100)
        check(await ws.recv() == "plain " * 100, f"{tag} websockets: uncompressed echo")


async def broadcast(url, ctx, tag, n=20):
    clients = [await websockets.connect(url + "/ws/room", ssl=ctx) for _ in range(n)]
    await asyncio.sleep(0.3)
    await clients[0].send("to everyone")
    got = await asyncio.gather(*[asyncio.wait_for(c.recv(), 10) for c in clients])
    check(all(g == "to everyone" for g in got), f"{tag} websockets: broadcast reached {n} clients")
    for c in clients:
        await c.close()


async def close_after_a_message(url, ctx):
    """Sends one message; returns the close frame the server answers with."""
    async with websockets.connect(url, ssl=ctx) as ws:
        await ws.send("x")
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as e:
            return e.rcvd
        return None


async def refusal(url, ctx):
    """The HTTP status a refused handshake gets (None if it was accepted)."""
    try:
        async with websockets.connect(url, ssl=ctx):
            return None
    except websockets.InvalidStatus as e:
        return e.response.status_code


async def deny_and_close_codes(url, ctx, tag):
    status = await refusal(url + "/ws/deny", ctx)
    check(status == 403, f"{tag} websockets: denied with {status}")
    rcvd = await close_after_a_message(url + "/ws/bye", ctx)
    check(rcvd is not None and rcvd.code == 4002 and rcvd.reason == "bye now",
          f"{tag} websockets: the app's close code and reason arrive ({rcvd})")
    # An app that raises: 1011 on an open socket, a 500 for the handshake.
    rcvd = await close_after_a_message(url + "/ws/fail", ctx)
    check(rcvd is not None and rcvd.code == 1011,
          f"{tag} websockets: an app error closes with 1011 ({rcvd})")
    status = await refusal(url + "/ws/fail-early", ctx)
    check(status == 500, f"{tag} websockets: an app error before accept is a {status}")


def with_websocket_client(url, ca, tag):
    opts = {"ca_certs": ca} if ca else {}
    ws = websocket.create_connection(url + "/ws/echo", sslopt=opts, timeout=10)
    ws.send("sync client")
    check(ws.recv() == "sync client", f"{tag} websocket-client: text echo")
    ws.send_binary(b"\x00\xff" * 1000)
    check(ws.recv() == b"\x00\xff" * 1000, f"{tag} websocket-client: binary echo")
    ws.close()


async def with_aiohttp(url, ctx, tag):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url + "/ws/echo", ssl=ctx if ctx else None) as ws:
            await ws.send_str("aiohttp")
            m = await ws.receive(timeout=10)
            check(m.data == "aiohttp", f"{tag} aiohttp: text echo")
        async with s.ws_connect(url + "/ws/echo", ssl=ctx if ctx else None, compress=15) as ws:
            check(ws.compress == 15, f"{tag} aiohttp: compression agreed ({ws.compress})")
            blob = bytes(range(256)) * 400 + b"\x00" * 100000
            await ws.send_bytes(blob)
            m = await ws.receive(timeout=10)
            check(hashlib.sha256(m.data).digest() == hashlib.sha256(blob).digest(),
                  f"{tag} aiohttp: compressed binary echo, exact bytes")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ws", required=True)
    ap.add_argument("--wss")
    ap.add_argument("--cafile")
    a = ap.parse_args()
    targets = [(a.ws, None, None, "ws")]
    if a.wss:
        ctx = ssl.create_default_context(cafile=a.cafile)
        targets.append((a.wss, ctx, a.cafile, "wss"))
    for url, ctx, ca, tag in targets:
        await echo(url, ctx, tag)
        await broadcast(url, ctx, tag)
        await deny_and_close_codes(url, ctx, tag)
        with_websocket_client(url, ca, tag)
        await with_aiohttp(url, ctx, tag)
    finish()


asyncio.run(main())
