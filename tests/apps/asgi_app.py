"""An ASGI site for corral's tests: FastAPI routes plus raw ASGI endpoints
that record what the server did (cancellations, disconnects, body pieces)."""
import asyncio
import contextlib
import hashlib
import json
import os
import time

from fastapi import BackgroundTasks, FastAPI, Request, WebSocket
from fastapi.responses import (FileResponse, HTMLResponse, JSONResponse, PlainTextResponse,
                               StreamingResponse)

# What the app saw, reported by GET /seen.
seen = {"cancelled": 0, "disconnects": 0, "sse_open": 0, "sse_closed": 0, "ws_codes": [], "ws_http": [], "pathsend": 0,
        "work": []}
room = set()


@contextlib.asynccontextmanager
async def lifespan(app):
    if os.environ.get("FAIL_STARTUP"):
        raise RuntimeError("database unreachable at startup")
    yield {"greeting": "hello from lifespan", "started_pid": os.getpid()}
    mark = os.environ.get("SHUTDOWN_MARK")
    if mark:
        with open(mark, "a") as f:
            f.write(f"shutdown {os.getpid()}\n")


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def index(request: Request):
    return {"hello": "world", "state": request.state.greeting, "pid": os.getpid(),
            "started_pid": request.state.started_pid}


@app.get("/scope")
async def scope(request: Request):
    s = request.scope
    return {"type": s["type"], "asgi": s["asgi"], "http_version": s["http_version"],
            "method": s["method"], "scheme": s["scheme"], "path": s["path"],
            "raw_path": s["raw_path"].decode("latin-1"),
            "query_string": s["query_string"].decode("latin-1"),
            "root_path": s["root_path"], "client": list(s["client"] or []),
            "server": list(s["server"] or []),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in s["headers"]]}


_names_before = []


@app.get("/names")
async def names(request: Request):
    """Which header names are the very objects the previous /names request
    had (the worker shares the bytes objects of names it has seen)."""
    global _names_before
    now = [k for k, _ in request.scope["headers"]]
    shared = [k.decode("latin-1") for k in now if any(k is b for b in _names_before)]
    _names_before = now
    return {"shared": shared}


@app.post("/sha256")
async def sha256(request: Request):
    h = hashlib.sha256()
    pieces = 0
    async for chunk in request.stream():
        if chunk:
            pieces += 1
        h.update(chunk)
    return {"sha256": h.hexdigest(), "pieces": pieces}


@app.api_route("/bytes/{n}", methods=["GET", "HEAD"])
async def some_bytes(n: int):
    data = bytes((i * 7) % 251 for i in range(n))
    return PlainTextResponse(data, headers={"x-sha256": hashlib.sha256(data).hexdigest()})


@app.get("/sleep/{s}")
async def sleep(s: float):
    try:
        await asyncio.sleep(s)
    except asyncio.CancelledError:
        seen["cancelled"] += 1
        raise
    return {"slept": s, "pid": os.getpid()}


@app.get("/block/{s}")
async def block(s: float):
    time.sleep(s)  # the mistake the watchdog is for
    return {"blocked": s}


@app.get("/sse")
async def sse():
    """One event, then quiet for an hour: the server must notice a client
    that leaves in the quiet, not at the next write."""
    async def gen():
        seen["sse_open"] += 1
        try:
            yield "data: hello\n\n"
            await asyncio.sleep(3600)
        finally:
            seen["sse_closed"] += 1
    return StreamingResponse(gen(), media_type="text/event-stream")


@app.get("/stream")
async def stream(n: int = 5, gap: float = 0.2):
    async def gen():
        for i in range(n):
            yield f"chunk {i} at {time.monotonic():.3f}\n"
            await asyncio.sleep(gap)
    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/error")
async def error():
    raise ValueError("boom in an async view")


@app.post("/work")
async def work(background: BackgroundTasks):
    """Two steps a second apart, then a background task: a client that
    leaves in between must not stop it halfway."""
    seen["work"].append("step1")
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        seen["work"].append("cancelled")
        raise
    seen["work"].append("step2")
    background.add_task(lambda: seen["work"].append("background"))
    return {"ok": True}


@app.get("/seen")
async def get_seen():
    return seen


PAGE = """<!doctype html><html><body><p id="out">waiting</p><script>
const out = document.getElementById("out");
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/echo");
const got = [];
const big = JSON.stringify(Array.from({length: 2000}, (_, i) => ({id: i, name: "item " + i})));
ws.onopen = () => {
  for (let i = 0; i < 50; i++) ws.send("msg " + i);
  ws.send(new Uint8Array([1, 2, 3]));
  ws.send(big);
};
ws.binaryType = "arraybuffer";  // synchronous, so messages keep their order
ws.onmessage = (e) => {
  got.push(typeof e.data === "string" ? e.data : "bytes:" + new Uint8Array(e.data).join(","));
  if (got.length === 52) {
    const ok = got.slice(0, 50).every((m, i) => m === "msg " + i) && got[50] === "bytes:1,2,3" && got[51] === big;
    out.textContent = ok ? "browser echo ok over " + location.protocol + " with " + ws.extensions
                         : "wrong: " + got.join("|").slice(0, 300);
    ws.close(1000);
  }
};
// Reported once the close handshake is over: Chromium says whether it was
// clean (a reset stream, even RST_STREAM(NO_ERROR), is a 1006).
ws.onclose = (e) => {
  const how = "; closed " + e.code + (e.wasClean ? " cleanly" : " uncleanly");
  fetch("/report", {method: "POST", body: out.textContent + how});
};
ws.onerror = () => { fetch("/report", {method: "POST", body: "websocket error"}); };
</script></body></html>"""


@app.post("/report")
async def report(request: Request):
    seen["browser"] = (await request.body()).decode()
    return {"ok": True}


@app.get("/page")
async def page():
    return HTMLResponse(PAGE)


@app.websocket("/ws/echo")
async def ws_echo(ws: WebSocket):
    offered = ws.scope.get("subprotocols") or []
    seen["ws_http"].append(ws.scope["http_version"])
    await ws.accept(subprotocol="echo.v1" if "echo.v1" in offered else None)
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            seen["ws_codes"].append(msg["code"])
            return
        if msg.get("text") is not None:
            await ws.send_text(msg["text"])
        else:
            await ws.send_bytes(msg["bytes"])


@app.websocket("/ws/room")
async def ws_room(ws: WebSocket):
    """Broadcast: every text message goes to everyone in the room."""
    await ws.accept()
    room.add(ws)
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            for other in list(room):
                try:
                    await other.send_text(msg["text"])
                except Exception:
                    room.discard(other)
    finally:
        room.discard(ws)


@app.websocket("/ws/late")
async def ws_late(ws: WebSocket):
    """Echoes bytes, after taking its time to accept (past the edge's 50 ms
    before it starts watching the client)."""
    await asyncio.sleep(0.3)
    await ws.accept()
    await echo_bytes(ws)


@app.websocket("/ws/slow-accept")
async def ws_slow_accept(ws: WebSocket):
    """Echoes bytes after 2 s without accepting (time to kill its worker)."""
    await asyncio.sleep(2)
    await ws.accept()
    await echo_bytes(ws)


async def echo_bytes(ws):
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        await ws.send_bytes(msg["bytes"])


# Set by POST /ws/later/go: until then /ws/later does not receive.
later = asyncio.Event()


@app.websocket("/ws/later")
async def ws_later(ws: WebSocket):
    """Echoes bytes, but only once told to: until then a client's messages
    pile up in front of an app that is not receiving."""
    await ws.accept()
    await later.wait()
    await echo_bytes(ws)


@app.post("/ws/later/go")
async def later_go():
    later.set()
    return {"ok": True}


@app.websocket("/ws/deny")
async def ws_deny(ws: WebSocket):
    await ws.close(code=4001)


@app.websocket("/ws/fail")
async def ws_fail(ws: WebSocket):
    """Raises after the first message (a bug in the app)."""
    await ws.accept()
    await ws.receive()
    raise RuntimeError("boom in a websocket handler")


@app.websocket("/ws/fail-early")
async def ws_fail_early(ws: WebSocket):
    raise RuntimeError("boom before accepting")


@app.websocket("/ws/bye")
async def ws_bye(ws: WebSocket):
    """Closes with its own code after the first message."""
    await ws.accept()
    await ws.receive()
    await ws.close(code=4002, reason="bye now")


async def wait_disconnect(scope, receive, send):
    """Raw ASGI: answers nothing until the client goes away."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            seen["disconnects"] += 1
            return


async def no_response(scope, receive, send):
    """Raw ASGI: returns without answering."""
    await receive()


def file_of(n):
    """A file of n bytes (a repeating pattern, so a copy shows any shift)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"file-{os.getpid()}-{n}")
    if not os.path.exists(path):
        pattern = bytes(range(251))
        with open(path + ".part", "wb") as f:
            f.write((pattern * (n // 251 + 1))[:n])
        os.rename(path + ".part", path)
    return path


@app.api_route("/file/{n}", methods=["GET", "HEAD"])
async def file(n: int):
    # Starlette sends http.response.pathsend when the server offers it.
    return FileResponse(file_of(n), media_type="application/octet-stream")


async def hints(scope, receive, send):
    """Raw ASGI: two preload hints, then the answer half a second later."""
    await send({"type": "http.response.early_hint",
                "links": [b"</style.css>; rel=preload; as=style",
                          b"</app.js>; rel=preload; as=script"]})
    await asyncio.sleep(0.5)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"the page"})


async def trailers(scope, receive, send):
    """Raw ASGI: a body in two pieces, then its sha256 as a trailer when the
    server offers trailers (and a field that may not be a trailer)."""
    offered = "http.response.trailers" in scope["extensions"]
    pieces = [b"first piece of the body, ", b"second piece"]
    await send({"type": "http.response.start", "status": 200, "trailers": offered,
                "headers": [(b"content-type", b"text/plain")]})
    for i, piece in enumerate(pieces):
        await send({"type": "http.response.body", "body": piece, "more_body": i == 0})
    if offered:
        digest = hashlib.sha256(b"".join(pieces)).hexdigest().encode()
        await send({"type": "http.response.trailers", "more_trailers": True,
                    "headers": [(b"x-body-sha256", digest)]})
        await send({"type": "http.response.trailers", "more_trailers": False,
                    "headers": [(b"x-status", b"complete"), (b"content-length", b"1")]})


async def bad_header(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-bad", b"a\r\nInjected: 1")]})
    await send({"type": "http.response.body", "body": b"never"})


async def refuse_unread(scope, receive, send):
    """Raw ASGI: a 401 without reading the request body (an auth check
    before an upload)."""
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"no"})


ANSWER_FIRST = bytes(range(256)) * 400  # 100 KiB


async def answer_first(scope, receive, send):
    """Raw ASGI: 50 x 100 KiB of answer first, then it reads the body."""
    size = len(ANSWER_FIRST) * 50
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(size).encode())]})
    for _ in range(50):
        await send({"type": "http.response.body", "body": ANSWER_FIRST, "more_body": True})
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.body", "body": b""})


async def echo_stream(scope, receive, send):
    """Raw ASGI: each piece of the body written back as it comes."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
        await send({"type": "http.response.body", "body": message.get("body", b""),
                    "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def die(scope, receive, send):
    """Raw ASGI: the worker exits at once, with whatever else it runs (a
    request that kills its worker: a segfault in a C extension, say)."""
    os._exit(1)


async def record_then_read(scope, receive, send):
    """Raw ASGI: writes its x-req-id to recorded.txt beside this file (a
    stand-in for a database insert), waits 1.5 s, then reads the body and
    answers `recorded by <pid>`."""
    req_id = dict(scope["headers"]).get(b"x-req-id", b"-").decode()
    with open(os.path.join(os.path.dirname(__file__), "recorded.txt"), "a") as f:
        f.write(req_id + "\n")
    await asyncio.sleep(1.5)
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"recorded by %d" % os.getpid()})


async def digest_later(scope, receive, send):
    """Raw ASGI: waits 1.5 s before reading the body (a slow auth lookup,
    say), then answers its length and sha256."""
    await asyncio.sleep(1.5)
    digest, size, more = hashlib.sha256(), 0, True
    while more:
        message = await receive()
        more = message.get("more_body", False)
        digest.update(message.get("body", b""))
        size += len(message.get("body", b""))
    out = f"{size} {digest.hexdigest()}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


async def headers_seen(scope, receive, send):
    """Raw ASGI: the scope's headers as JSON pairs, as the app got them."""
    out = json.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})


LISTENING = {"cancelled": False, "finished": False, "heard": 0}


async def listen_then_sleep(scope, receive, send):
    """Raw ASGI: takes the body, listens once for 50 ms and gives up
    (asyncio.wait_for, as a poll for a disconnect), then works for 5 s
    without listening: over app.timeout its task must be cancelled."""
    await receive()
    try:
        await asyncio.wait_for(receive(), 0.05)
    except asyncio.TimeoutError:
        pass
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        LISTENING["cancelled"] = True
        raise
    LISTENING["finished"] = True


async def two_listeners(scope, receive, send):
    """Raw ASGI: starts a stream, then two tasks wait in receive() at once
    (a handler and a disconnect watcher): both must hear http.disconnect."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"started", "more_body": True})

    async def listen():
        if (await receive())["type"] == "http.disconnect":
            LISTENING["heard"] += 1

    await asyncio.wait([asyncio.create_task(listen()) for _ in range(2)], timeout=10)


async def status_of_query(scope, receive, send):
    """Raw ASGI: answers with the status its query names (?150)."""
    await send({"type": "http.response.start", "status": int(scope["query_string"]),
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"x"})


async def listening_state(scope, receive, send):
    out = json.dumps(LISTENING).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})


class Routes:
    """Sends a few paths to raw ASGI callables, the rest to FastAPI."""

    raw = {"/raw/wait-disconnect": wait_disconnect, "/raw/no-response": no_response,
           "/raw/bad-header": bad_header, "/raw/hints": hints, "/raw/trailers": trailers,
           "/raw/refuse-unread": refuse_unread, "/raw/answer-first": answer_first,
           "/raw/echo-stream": echo_stream, "/raw/digest-later": digest_later,
           "/raw/record-then-read": record_then_read,
           "/raw/headers": headers_seen, "/raw/die": die, "/raw/listen-then-sleep": listen_then_sleep,
           "/raw/two-listeners": two_listeners, "/raw/listening": listening_state,
           "/raw/status": status_of_query}

    async def __call__(self, scope, receive, send):
        handler = self.raw.get(scope.get("path")) if scope["type"] == "http" else None
        if scope["type"] == "http" and scope["path"].startswith("/file/"):
            send = self.counting(send)
        await (handler or app)(scope, receive, send)

    @staticmethod
    def counting(send):
        async def counted(message):
            if message["type"] == "http.response.pathsend":
                seen["pathsend"] += 1
            await send(message)
        return counted


application = Routes()
