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


def timed_post(s, path, expect, what, round_):
    """Posts the 4 MiB body; the answer must be `expect` exactly, in 5 s."""
    t = time.monotonic()
    r = s.post(f"{base}{path}", data=body, timeout=30)
    took = time.monotonic() - t
    same = hashlib.sha256(r.content).digest() == hashlib.sha256(expect).digest()
    check(same and took < 5, f"round {round_}: {what}: {r.status_code}, {len(r.content)} bytes in {took:.2f}s")
    return r


with requests.Session() as s:
    for round_ in (1, 2):
        r = timed_post(s, "/raw/refuse-unread", b"no", "a 401 without reading 4 MiB", round_)
        check(r.status_code == 401, f"round {round_}: the refusal is a 401: {r.status_code}")
        r = timed_post(s, "/raw/answer-first", answer, "5 MB answered before the body is read", round_)
        check(r.status_code == 200, f"round {round_}: answer-first is a 200: {r.status_code}")
        r = timed_post(s, "/raw/echo-stream", body, "4 MiB echoed while read", round_)
        check(r.status_code == 200, f"round {round_}: the echo is a 200: {r.status_code}")
    r = s.get(f"{base}/", timeout=10)
    check(r.status_code == 200, f"the same connection then serves a GET: {r.status_code}")
finish()
