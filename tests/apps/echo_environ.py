"""WSGI probe app for corral's integration tests.

Routes (by PATH_INFO):

  (anything else)  JSON describing the request:
                     environ   every key -> value (str values as-is, others repr())
                     types     every key -> type(value).__name__
                     body_len, body_sha256, body_text (latin-1, only if <= 64 KiB)
                   The body is read from wsgi.input in the style chosen by ?read=
                     cl          read(int(CONTENT_LENGTH)) (read() if no CONTENT_LENGTH)  [default]
                     read        read()
                     readn       loop read(n) until b""          (?n=, default 8192)
                     readline    loop readline() until b""
                     readline_n  loop readline(n) until b""      (?n=, default 100)
                     readlines   b"".join(readlines())
                     iter        b"".join(line for line in wsgi.input)
                     none        don't read
  /write           uses the write() callable returned by start_response
  /gen             iterable with a close() method that writes a marker file
                     ?n= chunks (5) ?size= bytes each (16) ?delay= seconds between chunks (0)
                     ?lead= seconds before the first chunk (default: delay)
                     ?marker= file name, created in $ECHO_MARKER_DIR or this file's folder
  /exc             raises before start_response
  /head            fixed 1234-byte body with Content-Length (for HEAD tests)
  /status/NNN      responds with that status and no body
  /sleep           ?s= seconds (0.5), ?size= body size (default: a short text)
  /exit            os._exit(1) mid-request
  /pid             os.getpid()
  /errors          writes a marker line to wsgi.errors
  /filewrapper     serves a 256 KiB file through environ['wsgi.file_wrapper']
"""
import hashlib
import json
import os
import time
from urllib.parse import parse_qs

APP_DIR = os.path.dirname(os.path.abspath(__file__))
ERRORS_MARKER = "corral-test wsgi.errors marker 7d1f3c"
EXC_MESSAGE = "boom from echo_environ /exc"
FILEWRAPPER_DATA = bytes(range(256)) * 1024  # 256 KiB
HEAD_BODY = b"x" * 1234


def _query(environ):
    parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def _marker_path(name):
    base = os.environ.get("ECHO_MARKER_DIR") or APP_DIR
    return os.path.join(base, os.path.basename(name) or "marker")


def _check_bytes(value, what):
    if not isinstance(value, bytes):
        raise TypeError("wsgi.input.%s returned %r, not bytes" % (what, type(value)))
    return value


def _read_body(environ, style, n):
    inp = environ["wsgi.input"]
    if style == "none":
        return b""
    if style == "cl":
        cl = environ.get("CONTENT_LENGTH") or ""
        if cl:
            return _check_bytes(inp.read(int(cl)), "read(CONTENT_LENGTH)")
        return _check_bytes(inp.read(), "read()")
    if style == "read":
        return _check_bytes(inp.read(), "read()")
    if style == "readn":
        parts = []
        while True:
            chunk = _check_bytes(inp.read(n), "read(n)")
            if not chunk:
                break
            if len(chunk) > n:
                raise ValueError("read(%d) returned %d bytes" % (n, len(chunk)))
            parts.append(chunk)
        return b"".join(parts)
    if style == "readline":
        parts = []
        while True:
            line = _check_bytes(inp.readline(), "readline()")
            if not line:
                break
            parts.append(line)
        return b"".join(parts)
    if style == "readline_n":
        parts = []
        while True:
            line = _check_bytes(inp.readline(n), "readline(n)")
            if not line:
                break
            if len(line) > n:
                raise ValueError("readline(%d) returned %d bytes" % (n, len(line)))
            parts.append(line)
        return b"".join(parts)
    if style == "readlines":
        return b"".join(_check_bytes(line, "readlines()") for line in inp.readlines())
    if style == "iter":
        return b"".join(_check_bytes(line, "__iter__") for line in inp)
    raise ValueError("unknown read style %r" % style)


def _json_response(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode("ascii")
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _text_response(start_response, text, status="200 OK"):
    body = text if isinstance(text, bytes) else text.encode("utf-8")
    start_response(
        status,
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def echo(environ, start_response):
    q = _query(environ)
    style = q.get("read", "cl")
    n = int(q.get("n", "100" if style == "readline_n" else "8192"))
    body = _read_body(environ, style, n)
    out = {
        "environ": {k: (v if isinstance(v, str) else repr(v)) for k, v in environ.items()},
        "types": {k: type(v).__name__ for k, v in environ.items()},
        "read_style": style,
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_text": body.decode("latin-1") if len(body) <= 65536 else None,
        "pid": os.getpid(),
    }
    return _json_response(start_response, out)


def write_callable(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"part1-")
    write(b"part2-")
    return [b"part3"]


class ClosingBody:
    """Response iterable whose close() leaves a marker file behind.

    Deliberately a plain class (not a generator): a generator's cleanup also
    runs when it is garbage collected, but this close() only runs if the
    server really calls it, as PEP 3333 requires.
    """

    def __init__(self, n, size, delay, marker, lead=None):
        self.n = n
        self.size = size
        self.delay = delay
        self.lead = delay if lead is None else lead
        self.marker = marker
        self.sent = 0

    def __iter__(self):
        for i in range(self.n):
            pause = self.lead if i == 0 else self.delay
            if pause:
                time.sleep(pause)
            self.sent += 1
            yield (b"%06d:" % i).ljust(self.size, b".")

    def close(self):
        if self.marker:
            tmp = self.marker + ".tmp"
            with open(tmp, "w") as f:
                f.write("closed after %d of %d chunks\n" % (self.sent, self.n))
            os.replace(tmp, self.marker)


def gen(environ, start_response):
    q = _query(environ)
    n = int(q.get("n", "5"))
    size = max(8, int(q.get("size", "16")))
    delay = float(q.get("delay", "0"))
    marker = _marker_path(q["marker"]) if q.get("marker") else None
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    lead = float(q["lead"]) if "lead" in q else None
    return ClosingBody(n, size, delay, marker, lead)


def exc(environ, start_response):
    raise RuntimeError(EXC_MESSAGE)


def head(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(HEAD_BODY)))],
    )
    return [HEAD_BODY]


REASONS = {200: "OK", 204: "No Content", 304: "Not Modified", 404: "Not Found"}


def status(environ, start_response):
    code = int(environ["PATH_INFO"].rsplit("/", 1)[-1])
    start_response("%d %s" % (code, REASONS.get(code, "Status")), [])
    return []


def sleep(environ, start_response):
    q = _query(environ)
    seconds = float(q.get("s", "0.5"))
    time.sleep(seconds)
    if "size" in q:
        return _text_response(start_response, b"z" * int(q["size"]))
    return _text_response(start_response, "slept %s\n" % seconds)


def many_headers(environ, start_response):
    """n response fields (Django with many cookies, CSP and tracing fields
    sends a few hundred)."""
    n = int(_query(environ).get("n", "300"))
    start_response("200 OK", [("Content-Type", "text/plain")]
                   + [("X-Field-%d" % i, "value %d" % i) for i in range(n)])
    return [b"%d fields" % n]


def exit_now(environ, start_response):
    os._exit(1)


def pid(environ, start_response):
    return _text_response(start_response, str(os.getpid()))


def errors(environ, start_response):
    err = environ["wsgi.errors"]
    err.write(ERRORS_MARKER + "\n")
    err.flush()
    return _text_response(start_response, "wrote to wsgi.errors\n")


def filewrapper(environ, start_response):
    path = os.path.join(APP_DIR, "filewrapper.bin")
    if not os.path.exists(path):
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "wb") as f:
            f.write(FILEWRAPPER_DATA)
        os.replace(tmp, path)
    f = open(path, "rb")
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(FILEWRAPPER_DATA))),
        ],
    )
    return environ["wsgi.file_wrapper"](f, 8192)


ROUTES = {
    "/write": write_callable,
    "/gen": gen,
    "/exc": exc,
    "/head": head,
    "/sleep": sleep,
    "/exit": exit_now,
    "/pid": pid,
    "/errors": errors,
    "/filewrapper": filewrapper,
    "/many-headers": many_headers,
}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/status/"):
        return status(environ, start_response)
    return ROUTES.get(path, echo)(environ, start_response)
