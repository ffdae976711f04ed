"""WSGI app for the third-party client matrix (tests/clients/matrix.py).

Routes (plain PEP 3333, no framework):

  /bytes/<n>[?type=T]      body(n) as one block, with Content-Length; text/plain
                           unless ?type= names another Content-Type
  /stream/<n>[/<chunks>]   the same bytes yielded in <chunks> pieces (default 9)
                           by a generator, without Content-Length, text/html:
                           the server must frame it itself (chunked, h2 DATA or
                           close-delimited for HTTP/1.0)
  /slowstream/<k>          k pieces of 100 bytes, 0.3 s apart, text/plain;
                           ?xab=no adds X-Accel-Buffering: no,
                           ?notransform=1 adds Cache-Control: no-transform
  /upload                  POST/PUT: reads all of wsgi.input, answers
                           {"len": ..., "sha256": ...} as JSON
  /vary                    Vary: Cookie on a compressible 4 KiB text body

The bodies are a fixed formula so that the client side can recompute them:
matrix.py carries a copy of body() and slow_piece(); keep the two in sync.
"""
import functools
import hashlib
import json
import time
import urllib.parse

# body(n): fixed-width numbered lines, concatenated from line 0 and cut at n
# bytes. Compressible, yet no two lines are equal, so a misplaced or repeated
# chunk changes the sha256.
LINE = b"%08d corral client matrix: compressible text\n"
LINE_LEN = len(LINE % 0)
SLOW_PIECE_LEN = 100
SLOW_PAUSE = 0.3


@functools.lru_cache(maxsize=16)
def body(n):
    lines = n // LINE_LEN + 1
    return b"".join(LINE % i for i in range(lines))[:n]


def slow_piece(i):
    """Piece i of /slowstream: 100 bytes ending in a newline."""
    text = b"%03d slow stream piece, compressible text. " % i
    return (text * 4)[:SLOW_PIECE_LEN - 1] + b"\n"


def pieces(data, count):
    """data cut into `count` pieces of nearly equal size (none if empty)."""
    if not data:
        return []
    count = max(1, min(count, len(data)))
    step = -(-len(data) // count)
    return [data[i:i + step] for i in range(0, len(data), step)]


def fixed(start_response, data, content_type, extra=()):
    headers = [("Content-Type", content_type), ("Content-Length", str(len(data)))]
    start_response("200 OK", headers + list(extra))
    return [data]


def bytes_route(start_response, args, query):
    content_type = query.get("type", ["text/plain; charset=utf-8"])[0]
    return fixed(start_response, body(int(args[0])), content_type)


def stream_route(start_response, args, query):
    data = body(int(args[0]))
    count = int(args[1]) if len(args) > 1 else 9
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    # A generator, not a list: the server cannot know the length up front.
    return (piece for piece in pieces(data, count))


def slowstream_route(start_response, args, query):
    count = int(args[0])
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    if query.get("xab") == ["no"]:
        headers.append(("X-Accel-Buffering", "no"))
    if query.get("notransform") == ["1"]:
        headers.append(("Cache-Control", "no-transform"))
    start_response("200 OK", headers)

    def generate():
        for i in range(count):
            if i:
                time.sleep(SLOW_PAUSE)
            yield slow_piece(i)

    return generate()


def upload_route(start_response, environ):
    # Read to EOF rather than trusting CONTENT_LENGTH: h2 and chunked uploads
    # may not carry one, and the edge hands the app a complete body.
    data = environ["wsgi.input"].read()
    out = json.dumps({"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}).encode()
    return fixed(start_response, out, "application/json")


def vary_route(start_response):
    return fixed(start_response, body(4096), "text/plain; charset=utf-8", [("Vary", "Cookie")])


def not_found(start_response):
    data = b"not found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


def application(environ, start_response):
    parts = environ["PATH_INFO"].strip("/").split("/")
    route, args = parts[0], parts[1:]
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    try:
        if route == "bytes" and len(args) == 1:
            return bytes_route(start_response, args, query)
        if route == "stream" and len(args) in (1, 2):
            return stream_route(start_response, args, query)
        if route == "slowstream" and len(args) == 1:
            return slowstream_route(start_response, args, query)
        if route == "upload" and environ["REQUEST_METHOD"] in ("POST", "PUT"):
            return upload_route(start_response, environ)
        if route == "vary":
            return vary_route(start_response)
    except ValueError:  # a non-numeric size: a client error, not a crash
        pass
    return not_found(start_response)
