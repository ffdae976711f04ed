"""WSGI app behind corral's static-file and compression tests (tests/static_files.rs).

Routes (by PATH_INFO):

  /assets/...                the /assets/ mount's fallback="app" reached the app:
                               200 text/plain "app fallback: METHOD PATH_INFO ?QUERY_STRING"
                               with X-Served-By: static_app
  /html?size=N               N bytes of text/html (see text_body), with Content-Length
  /html-stream?size=N        the same body without Content-Length (chunked to the client)
  /typed?size=N&type=T       N bytes of text_body with Content-Type T (e.g. image/png)
  /partial                   206 with Content-Range, 10 000 bytes of text/html
  /encoded                   text/html the app already gzipped (Content-Encoding: gzip)
  anything else              404 text/plain "app 404: PATH_INFO"
"""
import gzip
from urllib.parse import parse_qs


def text_body(size):
    """Deterministic, compressible text; tests/static_files.rs builds the same."""
    out = []
    total = 0
    i = 0
    while total < size:
        line = "<p>line %05d: corral compresses this text</p>\n" % i
        out.append(line)
        total += len(line)
        i += 1
    return "".join(out).encode("ascii")[:size]


def _query(environ):
    parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = _query(environ)
    size = int(q.get("size", "10000"))
    if path.startswith("/assets/"):
        # PATH_INFO holds the URL's bytes as latin-1 (PEP 3333): send them back as they came.
        body = ("app fallback: %s %s ?%s" % (
            environ["REQUEST_METHOD"], path, environ.get("QUERY_STRING", ""))).encode("latin-1", "replace")
        start_response("200 OK", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Served-By", "static_app"),
        ])
        return [body]
    if path == "/html":
        body = text_body(size)
        start_response("200 OK", [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ])
        return [body]
    if path == "/html-stream":
        body = text_body(size)
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return (body[i:i + 1000] for i in range(0, len(body), 1000))
    if path == "/typed":
        body = text_body(size)
        start_response("200 OK", [
            ("Content-Type", q.get("type", "application/octet-stream")),
            ("Content-Length", str(len(body))),
        ])
        return [body]
    if path == "/partial":
        body = text_body(10000)
        start_response("206 Partial Content", [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Range", "bytes 0-9999/20000"),
            ("Content-Length", str(len(body))),
        ])
        return [body]
    if path == "/encoded":
        body = gzip.compress(text_body(10000))
        start_response("200 OK", [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", str(len(body))),
        ])
        return [body]
    body = ("app 404: %s" % path).encode("latin-1", "replace")
    start_response("404 Not Found", [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
    ])
    return [body]
