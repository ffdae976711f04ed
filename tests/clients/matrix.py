"""Third-party clients against one running corral site; run by tests/clients.rs.

    python matrix.py --http http://127.0.0.1:P --https https://127.0.0.1:T --cafile ca.pem
                     --static /static/file.bin --static-sha256 HEX

The site runs tests/apps/clients_app.py. Every case checks the status and the
sha256 of the body (decoded strictly where it is compressed) and prints
`PASS name` or `FAIL name: why`; the exit code is the number of failures.
"""
import argparse
import asyncio
import gzip
import hashlib
import os
import ssl
import subprocess
import sys
import tempfile
import time
import http.client
import urllib.parse

import aiohttp
import brotli
import httpx
import requests
import zstandard

LINE = b"corral client matrix line, fairly compressible text\n"
SIZES = [0, 23, 1000, 16384, 50_000, 1 << 20, 10 << 20]


def body(n):
    return (LINE * (n // len(LINE) + 1))[:n]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def strict_decode(coding, data):
    """A truncated stream is an error here, never a short body."""
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        d = brotli.Decompressor()
        out = d.process(data)
        if not d.is_finished():
            raise ValueError("brotli stream has no end-of-stream marker")
        return out
    if coding == "zstd":
        d = zstandard.ZstdDecompressor().decompressobj()
        out = d.decompress(data)
        if not d.eof:
            raise ValueError("zstd frame not finished")
        return out
    if coding in (None, "identity"):
        return data
    raise ValueError("unexpected Content-Encoding %r" % coding)


class Matrix:
    def __init__(self, args):
        self.args = args
        self.failures = 0

    def case(self, name, fn):
        try:
            fn()
            print("PASS", name, flush=True)
        except Exception as e:  # every failure is reported, none stops the run
            self.failures += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e), flush=True)

    def url(self, path, tls=False):
        return (self.args.https if tls else self.args.http) + path


def expect(status, got_body, want_status, want_body):
    if status != want_status:
        raise AssertionError("status %s, want %s" % (status, want_status))
    if sha(got_body) != sha(want_body):
        raise AssertionError("sha256 of %d bytes differs from the %d expected" % (len(got_body), len(want_body)))


def raw_get(base, path, headers):
    """http.client: no decoding, so the encoded bytes are checked as sent."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.getheader("Content-Encoding"), data


def run_cmd(args, timeout=60):
    p = subprocess.run(args, capture_output=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (args[0], p.returncode, p.stderr[-400:]))
    return p.stdout


def encoded_cases(m):
    for coding in ["gzip", "br", "zstd", "gzip, deflate, br, zstd"]:
        for kind in ["bytes", "stream"]:
            for n in SIZES:
                path = "/%s/%d" % (kind, n)

                def check(coding=coding, path=path, n=n):
                    status, enc, data = raw_get(m.args.http, path, {"Accept-Encoding": coding})
                    expect(status, strict_decode(enc, data), 200, body(n))

                m.case("%s %s (strict decoder)" % (coding, path), check)


def curl_cases(m):
    ca = ["--cacert", m.args.cafile]
    for flags, tls in [(["--http1.0"], False), (["--http1.1"], False), (["--http2-prior-knowledge"], False),
                       (["--http1.0"], True), (["--http2"], True), (["--compressed"], False),
                       (["--compressed", "--http2"], True)]:
        for path, n in [("/bytes/50000", 50_000), ("/stream/1048576", 1 << 20)]:
            def check(flags=flags, tls=tls, path=path, n=n):
                out = run_cmd(["curl", "-sS", "--fail", "--max-time", "30"] + ca + flags + [m.url(path, tls)])
                expect(200, out, 200, body(n))

            m.case("curl %s %s%s" % (" ".join(flags), "https " if tls else "", path), check)

    def upload():
        data = os.urandom(3 << 20)
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            started = time.monotonic()
            out = run_cmd(["curl", "-sS", "--fail", "-T", f.name, m.url("/upload")])
            took = time.monotonic() - started
        if out.decode().strip() != "%d %s" % (len(data), sha(data)):
            raise AssertionError("upload echoed %r" % out[:100])
        if took > 0.9:
            raise AssertionError("curl -T took %.2fs: no 100 Continue?" % took)

    m.case("curl -T upload of 3 MiB (Expect: 100-continue)", upload)


def python_cases(m):
    static = m.args.static
    targets = [("/bytes/50000", body(50_000)), ("/stream/1048576", body(1 << 20))]

    def with_requests(tls):
        for path, want in targets:
            r = requests.get(m.url(path, tls), verify=m.args.cafile, timeout=30)
            expect(r.status_code, r.content, 200, want)
        r = requests.get(m.url(static, tls), verify=m.args.cafile, timeout=30)
        if sha(r.content) != m.args.static_sha256:
            raise AssertionError("static file sha256 differs")
        data = os.urandom(2 << 20)
        r = requests.post(m.url("/upload", tls), data=data, verify=m.args.cafile, timeout=30)
        if r.text.strip() != "%d %s" % (len(data), sha(data)):
            raise AssertionError("upload echoed %r" % r.text[:100])

    def with_httpx(http2, tls):
        with httpx.Client(http2=http2, verify=m.args.cafile, timeout=30) as c:
            for path, want in targets:
                r = c.get(m.url(path, tls))
                if http2 and r.http_version != "HTTP/2":
                    raise AssertionError("negotiated %s" % r.http_version)
                expect(r.status_code, r.content, 200, want)
            data = os.urandom(2 << 20)
            r = c.post(m.url("/upload", tls), content=data)
            if r.text.strip() != "%d %s" % (len(data), sha(data)):
                raise AssertionError("upload echoed %r" % r.text[:100])

    async def with_aiohttp():
        ctx = ssl.create_default_context(cafile=m.args.cafile)
        async with aiohttp.ClientSession() as s:
            for tls in (False, True):
                for path, want in targets:
                    async with s.get(m.url(path, tls), ssl=ctx if tls else None) as r:
                        expect(r.status, await r.read(), 200, want)

    m.case("python requests (plain)", lambda: with_requests(False))
    m.case("python requests (TLS)", lambda: with_requests(True))
    m.case("httpx h1", lambda: with_httpx(False, False))
    m.case("httpx h2 (TLS, ALPN)", lambda: with_httpx(True, True))
    m.case("aiohttp (plain and TLS)", lambda: asyncio.run(with_aiohttp()))

    def with_wget():
        for path, want in targets:
            out = run_cmd(["wget", "-q", "-O", "-", "--ca-certificate", m.args.cafile, m.url(path, True)])
            expect(200, out, 200, want)

    m.case("wget (TLS)", with_wget)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--http", required=True)
    p.add_argument("--https", required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--static", required=True)
    p.add_argument("--static-sha256", required=True)
    m = Matrix(p.parse_args())
    encoded_cases(m)
    curl_cases(m)
    python_cases(m)
    print("%d failures" % m.failures, flush=True)
    sys.exit(min(m.failures, 100))


if __name__ == "__main__":
    main()
