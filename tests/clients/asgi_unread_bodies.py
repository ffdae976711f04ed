"""Apps that answer before (or while) reading a large request body, with
python `requests` posting 4 MiB: a 401 that never reads it, 5 MB of answer
before reading it, an echo written back piece by piece. Each must come back
whole and in seconds (app.timeout is 10 s here), and the connection must go
on serving. Usage: asgi_unread_bodies.py BASE_URL"""
import hashlib
import os
import sys
import time

import requests

from checks import check, finish

base = sys.argv[1]
body = os.urandom(4 << 20)
answer = bytes(range(256)) * 400 * 50
with requests.Session() as s:
    for round_ in (1, 2):
        t = time.monotonic()
        r = s.post(f"{base}/raw/refuse-unread", data=body, timeout=30)
        took = time.monotonic() - t
        check(r.status_code == 401 and r.content == b"no" and took < 5,
              f"round {round_}: a 401 without reading 4 MiB: {r.status_code} in {took:.2f}s")
        t = time.monotonic()
        r = s.post(f"{base}/raw/answer-first", data=body, timeout=30)
        took = time.monotonic() - t
        check(r.status_code == 200 and hashlib.sha256(r.content).digest() == hashlib.sha256(answer).digest()
              and took < 5, f"round {round_}: 5 MB answered before the body is read: {r.status_code}, "
                            f"{len(r.content)} bytes in {took:.2f}s")
        t = time.monotonic()
        r = s.post(f"{base}/raw/echo-stream", data=body, timeout=30)
        took = time.monotonic() - t
        check(r.status_code == 200 and hashlib.sha256(r.content).digest() == hashlib.sha256(body).digest()
              and took < 5, f"round {round_}: 4 MiB echoed while read: {r.status_code}, "
                            f"{len(r.content)} bytes in {took:.2f}s")
    r = s.get(f"{base}/", timeout=10)
    check(r.status_code == 200, f"the same connection then serves a GET: {r.status_code}")
finish()
