"""WSGI app for the third-party client matrix (tests/clients/matrix.py).

  /bytes/<n>    n bytes of compressible text, with Content-Length
  /stream/<n>   the same bytes, yielded in pieces without a length (chunked)
  /upload       reads the body; answers "<length> <sha256>"
"""
import hashlib

LINE = b"corral client matrix line, fairly compressible text\n"


def body(n):
    return (LINE * (n // len(LINE) + 1))[:n]


def application(environ, start_response):
    parts = environ["PATH_INFO"].strip("/").split("/")
    text = [("Content-Type", "text/plain; charset=utf-8")]
    if parts[0] == "bytes":
        data = body(int(parts[1]))
        start_response("200 OK", text + [("Content-Length", str(len(data)))])
        return [data]
    if parts[0] == "stream":
        data = body(int(parts[1]))
        step = max(1, len(data) // 9)
        start_response("200 OK", text)
        return (data[i:i + step] for i in range(0, len(data), step))
    if parts[0] == "upload":
        data = environ["wsgi.input"].read()
        out = ("%d %s\n" % (len(data), hashlib.sha256(data).hexdigest())).encode()
        start_response("200 OK", text + [("Content-Length", str(len(out)))])
        return [out]
    start_response("404 Not Found", text)
    return [b"not found\n"]
