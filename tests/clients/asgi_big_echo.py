"""Large uploads to apps that answer while they read, with python
`requests`: a 15 MiB body echoed back piece by piece, and 5 MB of answer
sent before the body is read. Each answer must be exact (sha256), and the
worker must hold only a window of the body, not all of it: the edge writes
the body while it reads the answer, so the worker never has to take the
body in to make room for the app's writes. Its peak RSS (VmHWM, reset
first through /proc/PID/clear_refs) grows by under 8 MiB; it grew by the
whole body when the edge sent all of it before reading.
Usage: asgi_big_echo.py BASE_URL WORKER_PID"""
import hashlib
import os
import sys

import requests

from checks import check, finish

base, worker = sys.argv[1], int(sys.argv[2])
SIZE = 15 << 20
body = os.urandom(SIZE)
answer = bytes(range(256)) * 400 * 50


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def sha(b):
    return hashlib.sha256(b).hexdigest()


with requests.Session() as s:
    s.get(f"{base}/", timeout=10)  # the worker's first request is behind it
    with open(f"/proc/{worker}/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = status_kib(worker, "VmRSS")
    r = s.post(f"{base}/raw/echo-stream", data=body, timeout=60)
    check(r.status_code == 200 and sha(r.content) == sha(body),
          f"15 MiB echoed while read: {r.status_code}, {len(r.content)} bytes, same sha256")
    r = s.post(f"{base}/raw/answer-first", data=body, timeout=60)
    check(r.status_code == 200 and sha(r.content) == sha(answer),
          f"5 MB answered before a 15 MiB body is read: {r.status_code}, {len(r.content)} bytes")
    grew = (status_kib(worker, "VmHWM") - before) / 1024
    check(grew < 8, f"the worker's peak grew {grew:.1f} MiB for a 15 MiB body (under 8)")
    r = s.get(f"{base}/", timeout=10)
    check(r.status_code == 200, f"then a GET is served: {r.status_code}")
finish()
