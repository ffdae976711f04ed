"""A Litestar app: lifespan state, a JSON route with path and query
parameters, a POST that hashes its body, a streamed response and a
WebSocket echo, served by corral's ASGI worker."""
import asyncio
import hashlib
import os
from contextlib import asynccontextmanager

from litestar import Litestar, Request, WebSocket, get, post, websocket
from litestar.datastructures import State
from litestar.response import Stream


@asynccontextmanager
async def lifespan(app: Litestar):
    app.state.greeting = f"hello from lifespan in {os.getpid()}"
    yield


@get("/greet/{name:str}")
async def greet(name: str, state: State, times: int = 1) -> dict:
    shout = (name.upper() + "!") * times
    return {"greeting": state.greeting, "name": name, "shout": shout, "pid": os.getpid()}


@post("/sha256")
async def sha256(request: Request) -> dict:
    body = await request.body()
    data = await request.json()
    return {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body), "keys": sorted(data)}


@get("/stream/{n:int}")
async def stream(n: int, size: int = 10) -> Stream:
    async def chunks():
        for i in range(n):
            yield f"chunk {i}:{'x' * size}\n"
            await asyncio.sleep(0.05)
    return Stream(chunks(), media_type="text/plain")


@websocket("/ws/echo")
async def ws_echo(socket: WebSocket) -> None:
    await socket.accept()
    while True:
        event = await socket.receive()
        if event["type"] == "websocket.disconnect":
            return
        if event.get("bytes") is not None:
            await socket.send_bytes(event["bytes"])
        else:
            await socket.send_text(f"litestar: {event['text']}")


app = Litestar([greet, sha256, stream, ws_echo], lifespan=[lifespan])
