"""WSGI app for corral's reload tests: answers with the contents of
version.txt (next to this file) as read AT IMPORT, plus the worker's pid.
A worker that re-imported the app after a reload shows the new version.

  /         "<version> <pid>"
"""
import os

APP_DIR = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(APP_DIR, "version.txt")) as f:
    VERSION = f.read().strip()


def application(environ, start_response):
    body = ("%s %d" % (VERSION, os.getpid())).encode("utf-8")
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
