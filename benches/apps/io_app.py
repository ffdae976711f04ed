"""An I/O-bound app: 10 ms of waiting (a database call, say) per request."""
import time


def application(environ, start_response):
    time.sleep(0.01)
    body = b"slept 10ms"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
