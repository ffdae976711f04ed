"""The bundled demo: a plain WSGI app, no dependencies.

`corral serve --config config/site.toml` runs it on http://127.0.0.1:8080/.
"""
import json
import os


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        body = (
            "<!doctype html><title>corral</title>"
            "<h1>Hello from corral</h1>"
            f"<p>Served by worker pid {os.getpid()}.</p>"
            '<p><a href="/api/environ">/api/environ</a> shows what the app received.</p>'
        ).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/api/environ":
        shown = {k: v for k, v in environ.items() if isinstance(v, str)}
        body = json.dumps(shown, indent=2, sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/api/echo" and environ["REQUEST_METHOD"] == "POST":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [data]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
