"""WSGI app for corral's worker-lifecycle tests (timeouts, recycling, kills,
scaling, threads).

Routes (by PATH_INFO):

  /fast      a short text answer
  /pid       os.getpid()
  /sleep     sleeps ?s= seconds (default 0.05), then answers with the pid;
             the sleeping frame is the function `lifecycle_sleeper`, which is
             what a faulthandler stack dump shows
  /leak      keeps ?mb= MiB (default 30) alive in a module-level list, so the
             worker's resident memory grows with every call; answers
             "<pid> <total MiB kept>"
  /burn      spins the CPU for ?ms= milliseconds (default 200) of its own
             thread's CPU time; answers the pid
  /environ   JSON: wsgi.multithread, wsgi.multiprocess, pid, thread name
"""
import json
import os
import threading
import time
from urllib.parse import parse_qs

KEPT = []


def _query(environ):
    parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def _text(start_response, text, status="200 OK"):
    body = text.encode("utf-8")
    start_response(
        status,
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def lifecycle_sleeper(seconds):
    time.sleep(seconds)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = _query(environ)
    if path == "/fast":
        return _text(start_response, "fast %d\n" % os.getpid())
    if path == "/pid":
        return _text(start_response, str(os.getpid()))
    if path == "/sleep":
        lifecycle_sleeper(float(q.get("s", "0.05")))
        return _text(start_response, str(os.getpid()))
    if path == "/leak":
        mb = int(q.get("mb", "30"))
        # bytearray pages are written (zeroed), so they count as resident.
        block = bytearray(mb << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        KEPT.append(block)
        total = sum(len(b) for b in KEPT) >> 20
        return _text(start_response, "%d %d" % (os.getpid(), total))
    if path == "/burn":
        until = time.thread_time() + float(q.get("ms", "200")) / 1000
        spins = 0
        while time.thread_time() < until:
            spins += 1
        return _text(start_response, str(os.getpid()))
    if path == "/environ":
        body = json.dumps(
            {
                "multithread": environ.get("wsgi.multithread"),
                "multiprocess": environ.get("wsgi.multiprocess"),
                "pid": os.getpid(),
                "thread": threading.current_thread().name,
            }
        )
        return _text(start_response, body)
    return _text(start_response, "not found\n", "404 Not Found")
