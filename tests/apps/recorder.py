"""Request recorder for corral's hostile-input tests (tests/hostile.rs).

Every request the app sees is appended, as one JSON object per line, to the
file named by $RECORDER_FILE (set through [app.env] in site.toml), so a test
can check afterwards which requests reached Python at all:

  {"method", "path" (PATH_INFO), "uri" (REQUEST_URI), "query"
   (QUERY_STRING), "content_length" (CONTENT_LENGTH or null), "body_len",
   "body_sha256", "body_head" (first 200 bytes, latin-1), "remote_addr",
   "scheme" (wsgi.url_scheme), "host" (HTTP_HOST), "xff"
   (HTTP_X_FORWARDED_FOR), "xfp" (HTTP_X_FORWARDED_PROTO), "te"
   (HTTP_TRANSFER_ENCODING), "pid"}

The response is 200 with a small text body "recorded <METHOD> <PATH_INFO>\n",
except:

  /big?size=N   N bytes (default 5 MiB) of "0123456789abcdef" repeated, sent
                as an iterable of 64 KiB chunks with a Content-Length
                (for slow-reader tests); recorded like any other request.
"""
import hashlib
import json
import os

RECORD = os.environ.get("RECORDER_FILE") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "recorded.jsonl"
)
PATTERN = b"0123456789abcdef" * 4096  # 64 KiB


def _record(entry):
    line = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
    # One write() of a line on an O_APPEND file: lines from several workers
    # never interleave.
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _read_body(environ):
    inp = environ["wsgi.input"]
    cl = environ.get("CONTENT_LENGTH") or ""
    if cl:
        return inp.read(int(cl))
    return inp.read()


def _big(environ, start_response):
    size = 5 * 1024 * 1024
    for part in environ.get("QUERY_STRING", "").split("&"):
        if part.startswith("size="):
            size = int(part[5:])
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )

    def chunks():
        left = size
        while left > 0:
            n = min(left, len(PATTERN))
            yield PATTERN[:n]
            left -= n

    return chunks()


def application(environ, start_response):
    body = _read_body(environ)
    _record(
        {
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "uri": environ.get("REQUEST_URI"),
            "query": environ.get("QUERY_STRING"),
            "content_length": environ.get("CONTENT_LENGTH"),
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_head": body[:200].decode("latin-1"),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "scheme": environ.get("wsgi.url_scheme"),
            "host": environ.get("HTTP_HOST"),
            "xff": environ.get("HTTP_X_FORWARDED_FOR"),
            "xfp": environ.get("HTTP_X_FORWARDED_PROTO"),
            "te": environ.get("HTTP_TRANSFER_ENCODING"),
            "pid": os.getpid(),
        }
    )
    if environ.get("PATH_INFO") == "/big":
        return _big(environ, start_response)
    text = ("recorded %s %s\n" % (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")))
    out = text.encode("utf-8", "surrogateescape")
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))],
    )
    return [out]
