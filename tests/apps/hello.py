"""Smallest possible WSGI app: used by corral's hello/keep-alive/slow-client tests."""

BODY = b"Hello, World!"


def application(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]


def create_app():
    """Factory form, for `module = "hello:create_app()"`."""
    return application
