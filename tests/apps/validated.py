"""A small app wrapped in wsgiref.validate.validator.

Every warning is turned into an error at import time, so any PEP 3333
violation by the server (missing QUERY_STRING, non-str environ values,
wsgi.input returning non-bytes, the response iterable not being closed, ...)
raises inside the worker and the request fails (500) or a "Traceback" shows up
in the server's stderr.  The tests check for both.
"""
import warnings

warnings.simplefilter("error")

from urllib.parse import parse_qs  # noqa: E402
from wsgiref.validate import validator  # noqa: E402


def _read_body(inp, style):
    if style == "readline":
        parts = []
        while True:
            line = inp.readline()
            if not line:
                break
            parts.append(line)
        return b"".join(parts)
    if style == "readlines":
        return b"".join(inp.readlines())
    if style == "iter":
        return b"".join(line for line in inp)
    # default: read(size) loop -- the validator only allows read() with one argument
    parts = []
    while True:
        chunk = inp.read(65536)
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts)


def inner(environ, start_response):
    qs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    style = qs.get("read", ["read"])[-1]
    body = _read_body(environ["wsgi.input"], style)

    errors = environ["wsgi.errors"]
    errors.write("")
    errors.writelines([])
    errors.flush()

    out = (
        "method=%s path=%s query=%s len=%d\n"
        % (
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            len(body),
        )
    ).encode("utf-8", "surrogateescape")
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(out))),
        ],
    )
    return [out]


application = validator(inner)
