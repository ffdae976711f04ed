"""A Quart app (Flask's API, async): routes, a JSON body, a streamed
response and a WebSocket, served by corral's ASGI worker."""
import asyncio

from quart import Quart, request, websocket

app = Quart(__name__)
started = []


@app.before_serving
async def startup():
    started.append("yes")


@app.route("/")
async def index():
    return {"quart": True, "started": bool(started)}


@app.route("/echo", methods=["POST"])
async def echo():
    data = await request.get_json()
    return {"got": data, "length": request.content_length}


@app.route("/stream")
async def stream():
    async def gen():
        for i in range(3):
            yield f"part {i}\n".encode()
            await asyncio.sleep(0.05)
    return gen(), 200, {"Content-Type": "text/plain"}


@app.websocket("/ws")
async def ws():
    while True:
        message = await websocket.receive()
        await websocket.send(f"quart: {message}")
