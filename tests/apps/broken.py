"""An app whose import fails: corral must show the traceback and give up."""
import nope  # noqa: F401  -- there is no such module


def application(environ, start_response):  # never reached
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"unreachable"]
