"""Counts every run of every request, for the hop tests (tests/hop_ahead.rs).

  /run?id=X&s=S   appends "<id> <pid>" as a line to ledger.txt beside this
                  file the moment the app starts on it, sleeps S seconds
                  (default 0), answers "<pid>".

So a test can tell which requests ran, where, and that none ran twice.
"""
import os
import time
from urllib.parse import parse_qs

LEDGER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ledger.txt")


def application(environ, start_response):
    q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    line = ("%s %d\n" % (q.get("id", "-"), os.getpid())).encode()
    # One O_APPEND write per line: lines from several workers never mix.
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(float(q.get("s", "0")))
    body = ("%d\n" % os.getpid()).encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
