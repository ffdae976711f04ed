"""WSGI app for corral's preload tests.

At import it appends one line ("<pid>") to imports.log next to this file, and
allocates BALLAST_MIB (env LIFECYCLE_BALLAST_MIB, default 50) MiB of bytes
that stays alive: with app.preload the master imports once and the workers
share those pages copy-on-write; without it every worker has its own copy.

  /pid      os.getpid()
  /ballast  "<len(BALLAST)> <id(BALLAST)>"
"""
import os

APP_DIR = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(APP_DIR, "imports.log"), "a") as f:
    f.write("%d\n" % os.getpid())

BALLAST_MIB = int(os.environ.get("LIFECYCLE_BALLAST_MIB", "50"))
# b"x" * n writes every page, so they are resident (and, once forked, shared).
BALLAST = b"x" * (BALLAST_MIB << 20)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/ballast":
        body = b"%d %d" % (len(BALLAST), id(BALLAST))
    else:
        body = str(os.getpid()).encode("ascii")
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
