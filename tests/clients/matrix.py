"""Third-party clients against one running corral site (tests/apps/clients_app.py).

    python matrix.py --base http://127.0.0.1:PORT
                     [--tls-base https://127.0.0.1:TLSPORT --cafile ca.pem] [--h2c]
                     [--static-url URL --static-sha256 HEX]
                     [--min-size BYTES] [--time-limit SECONDS]

--h2c: the plain port also speaks cleartext HTTP/2 ([server] h2c = true).
--static-url: a full URL or just a path; the path is fetched from --base and,
  when given, from --tls-base.
--min-size: the site's [compression] min_size (default 1024, corral's default);
  the site is assumed to run the default [compression] settings otherwise.
The older spellings --http, --https and --static PATH (tests/clients.rs) are
accepted too.

Every case checks the status and the sha256 of the body (decoded strictly
where it is compressed: a truncated gzip, brotli, zstd or deflate stream is an
error, never a short body) and prints `PASS name`, `FAIL name: reason` or
`SKIP name: reason`, then a summary line "N passed, M failures, K skipped".
Exit status: 0 when nothing failed, 1 otherwise, 2 for bad arguments.
Every client call has a timeout, and the whole run is bounded by --time-limit
(a case still running then is reported as FAIL). Only loopback is targeted.
"""
import argparse
import asyncio
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib

import aiohttp
import brotli
import httpx
import requests
import zstandard

# ---------------------------------------------------------------------------
# What the app sends. A copy of body() and slow_piece() in
# tests/apps/clients_app.py: fixed-width numbered lines from line 0, cut at n
# bytes, so that no two lines are equal and a lost or repeated piece shows.
# ---------------------------------------------------------------------------
LINE = b"%08d corral client matrix: compressible text\n"
LINE_LEN = len(LINE % 0)
SLOW_PIECES = 5
SLOW_PAUSE = 0.3
_bodies = {}


def body(n):
    if n not in _bodies:
        _bodies[n] = b"".join(LINE % i for i in range(n // LINE_LEN + 1))[:n]
    return _bodies[n]


def slow_piece(i):
    text = b"%03d slow stream piece, compressible text. " % i
    return (text * 4)[:99] + b"\n"


SIZES = [0, 23, 1000, 16384, 50_000, 1 << 20, 10 << 20]
STREAM_PIECES = 7
CODINGS = ["gzip", "br", "zstd", "deflate", "gzip, deflate, br, zstd"]  # the last: a browser's
COMPRESSORS = {"gzip", "br", "zstd"}  # what corral is expected to answer with
CLIENT_TIMEOUT = 30  # seconds, for any one request or tool run
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Failure(Exception):
    """A check that did not hold; its message is the FAIL reason."""


# ---------------------------------------------------------------------------
# Strict decoding
# ---------------------------------------------------------------------------
class StrictDecoder:
    """Incremental decoder for one Content-Encoding. finish() fails unless the
    stream really ended (gzip trailer, zlib adler32, brotli end marker, zstd
    frame end): lenient decoders such as curl's turn a truncated stream into
    a short body with exit code 0."""

    def __init__(self, coding):
        self.coding = (coding or "identity").strip().lower()
        if self.coding not in ("identity", "gzip", "deflate", "br", "zstd"):
            raise Failure("unexpected Content-Encoding %r" % coding)
        self.raw_len = 0
        self.d = self._new()

    def _new(self):
        if self.coding == "gzip":
            return zlib.decompressobj(wbits=31)
        if self.coding == "deflate":  # HTTP "deflate" is the zlib format (RFC 9110 8.4.1.2)
            return zlib.decompressobj(wbits=15)
        if self.coding == "br":
            return brotli.Decompressor()
        if self.coding == "zstd":
            return zstandard.ZstdDecompressor().decompressobj()
        return None

    def _ended(self):
        if self.coding == "identity":
            return True
        if self.coding == "br":
            return self.d.is_finished()
        return self.d.eof

    def feed(self, data):
        self.raw_len += len(data)
        if self.coding == "identity":
            return data
        out = []
        try:
            while data:
                if self._ended():
                    # gzip members and zstd frames may be concatenated; after
                    # a brotli or zlib stream nothing may follow.
                    if self.coding not in ("gzip", "zstd"):
                        raise Failure("%d bytes after the end of the %s stream" % (len(data), self.coding))
                    self.d = self._new()
                if self.coding == "br":
                    out.append(self.d.process(data))
                    break
                out.append(self.d.decompress(data))
                data = self.d.unused_data if self.d.eof else b""
        except (zlib.error, brotli.error, zstandard.ZstdError) as e:
            raise Failure("%s stream is corrupt: %s" % (self.coding, e))
        return b"".join(out)

    def finish(self):
        if not self._ended():
            raise Failure("%s stream is truncated: no end after %d encoded bytes"
                          % (self.coding, self.raw_len))
        if self.coding in ("gzip", "deflate"):
            return self.d.flush()
        return b""


def strict_decode(coding, data):
    decoder = StrictDecoder(coding)
    out = decoder.feed(data) + decoder.finish()
    if decoder.coding == "br":
        # The one-shot decoder must agree: it raises on a truncated stream.
        try:
            if brotli.decompress(data) != out:
                raise Failure("brotli.decompress and brotli.Decompressor disagree")
        except brotli.error as e:
            raise Failure("brotli.decompress: %s" % e)
    return out


# ---------------------------------------------------------------------------
# Checks shared by the cases
# ---------------------------------------------------------------------------
def expect_status(got, want=200):
    if got != want:
        raise Failure("status %s, want %s" % (got, want))


def expect_body(got, want):
    if sha(got) == sha(want):
        return
    if want.startswith(got):
        raise Failure("body truncated: %d of %d bytes" % (len(got), len(want)))
    raise Failure("sha256 of the %d-byte body differs from the expected %d bytes" % (len(got), len(want)))


def expect_upload_answer(text, payload):
    try:
        answer = json.loads(text)
    except ValueError:
        raise Failure("upload answer is not JSON: %r" % text[:100])
    want = {"len": len(payload), "sha256": sha(payload)}
    if answer != want:
        raise Failure("upload answered %r, sent %r" % (answer, want))


def offered(accept_encoding):
    return {t.split(";")[0].strip() for t in accept_encoding.split(",")}


def expect_coding(kind, n, asked, got, min_size):
    """The encoding the site chose is one the client offered; a body with a
    known length under min_size is sent as is; anything at least min_size
    long is compressed when gzip/br/zstd was offered (otherwise the strict
    decoding of that case would prove nothing)."""
    got = (got or "identity").lower()
    accepted = offered(asked)
    if got != "identity" and got not in accepted:
        raise Failure("answered Content-Encoding %s to Accept-Encoding %r" % (got, asked))
    if kind == "bytes" and n < min_size and got != "identity":
        raise Failure("%s-compressed a %d-byte body, under min_size %d" % (got, n, min_size))
    if n >= min_size and accepted & COMPRESSORS and got == "identity":
        raise Failure("a %d-byte text body was not compressed for Accept-Encoding %r" % (n, asked))


def split_url(url):
    u = urllib.parse.urlsplit(url)
    return u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80)


# ---------------------------------------------------------------------------
# Transports that show the bytes as sent
# ---------------------------------------------------------------------------
class RawResponse:
    def __init__(self, status, headers, data):
        self.status = status
        self.headers = headers  # [(name, value)] as received, duplicates kept
        self.data = data

    def get_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name):
        values = self.get_all(name)
        return values[0] if values else None


def h1_request(base, method, path, headers, timeout=CLIENT_TIMEOUT):
    """http.client: no decoding, one connection per request."""
    scheme, host, port = split_url(base)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return RawResponse(r.status, r.getheaders(), data)
    finally:
        conn.close()


def tls_context(cafile, url):
    return ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None


def httpx_client(cafile, url, http2):
    """HTTP/2 is negotiated by ALPN over TLS; on a plain URL it can only be
    prior knowledge (h2c), which httpx does when HTTP/1 is turned off."""
    tls = url.startswith("https:")
    return httpx.Client(http1=tls or not http2, http2=http2, verify=tls_context(cafile, url) or True,
                        timeout=CLIENT_TIMEOUT)


class H2:
    """httpx over HTTP/2 (TLS with ALPN, or h2c prior knowledge), raw bytes."""

    def __init__(self, base, cafile):
        self.base = base
        self.client = httpx_client(cafile, base, http2=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.client.close()

    def stream(self, method, path, headers):
        return self.client.stream(method, self.base + path, headers=headers)

    def request(self, method, path, headers):
        with self.stream(method, path, headers) as r:
            data = b"".join(r.iter_raw())
            if r.http_version != "HTTP/2":
                raise Failure("negotiated %s, not HTTP/2" % r.http_version)
            return RawResponse(r.status_code, list(r.headers.multi_items()), data)


def run_tool(cmd, timeout=CLIENT_TIMEOUT + 10, input=None):
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        raise Failure("%s did not finish in %d s" % (cmd[0], timeout))


def tail(data, n=300):
    return data[-n:].decode(errors="replace").strip()


# ---------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------
class Matrix:
    def __init__(self, args):
        self.args = args
        self.passed = self.failed = self.skipped = 0
        self.current = None
        self.lock = threading.Lock()

    def case(self, name, fn):
        self.current = name
        try:
            fn()
        except Failure as e:
            self.report("FAIL %s: %s" % (name, e), "failed")
        except Exception as e:  # a client raising is a failure of this case, not of the run
            self.report("FAIL %s: %s: %s" % (name, type(e).__name__, e), "failed")
        else:
            self.report("PASS %s" % name, "passed")
        self.current = None

    def skip(self, name, why):
        self.report("SKIP %s: %s" % (name, why), "skipped")

    def report(self, line, counter):
        with self.lock:
            setattr(self, counter, getattr(self, counter) + 1)
            print(line, flush=True)

    def summary(self):
        return "%d passed, %d failures, %d skipped" % (self.passed, self.failed, self.skipped)

    def start_watchdog(self, limit):
        """Never hang the suite: past the limit, report and exit at once."""
        def expire():
            with self.lock:
                self.failed += 1
                print("FAIL time limit: the matrix ran over %d s (still running: %s)"
                      % (limit, self.current), flush=True)
                print(self.summary(), flush=True)
                os._exit(1)  # other threads may be stuck in a client call
        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()

    # URLs -------------------------------------------------------------------
    def bases(self):
        """(label, base URL) of every listener to test."""
        out = [("http", self.args.base)]
        if self.args.tls_base:
            out.append(("https", self.args.tls_base))
        return out

    def h2_bases(self):
        out = []
        if self.args.tls_base:
            out.append(("h2 https", self.args.tls_base))
        if self.args.h2c:
            out.append(("h2c", self.args.base))
        return out

    def static_path(self):
        if not self.args.static_url:
            return None
        u = urllib.parse.urlsplit(self.args.static_url)
        return u.path + ("?" + u.query if u.query else "")


# ---------------------------------------------------------------------------
# 1. Every encoding, every size, whole and streamed, decoded strictly
# ---------------------------------------------------------------------------
def encoded_paths():
    for kind in ("bytes", "stream"):
        for n in SIZES:
            path = "/bytes/%d" % n if kind == "bytes" else "/stream/%d/%d" % (n, STREAM_PIECES)
            yield kind, n, path


def check_encoded(resp, kind, n, coding, min_size):
    expect_status(resp.status)
    expect_coding(kind, n, coding, resp.get("Content-Encoding"), min_size)
    expect_body(strict_decode(resp.get("Content-Encoding"), resp.data), body(n))


def encoded_cases(m):
    min_size = m.args.min_size
    for coding in CODINGS:
        for kind, n, path in encoded_paths():
            def h1(coding=coding, kind=kind, n=n, path=path):
                resp = h1_request(m.args.base, "GET", path, {"Accept-Encoding": coding})
                check_encoded(resp, kind, n, coding, min_size)

            m.case("encoded h1 [%s] %s" % (coding, path), h1)
    for label, base in m.h2_bases():
        with H2(base, m.args.cafile) as h2:
            for coding in CODINGS:
                for kind, n, path in encoded_paths():
                    def over_h2(coding=coding, kind=kind, n=n, path=path, h2=h2):
                        resp = h2.request("GET", path, {"Accept-Encoding": coding})
                        check_encoded(resp, kind, n, coding, min_size)

                    m.case("encoded %s [%s] %s" % (label, coding, path), over_h2)


# ---------------------------------------------------------------------------
# 2. Clients that decode for themselves: status and exact bytes
# ---------------------------------------------------------------------------
def curl(m, flags, url, extra=()):
    """Runs curl; returns (status, HTTP version, body)."""
    ca = ["--cacert", m.args.cafile] if url.startswith("https:") else []
    cmd = (["curl", "-sS", "--max-time", str(CLIENT_TIMEOUT),
            "-w", "%{stderr}\n%{http_code} %{http_version}\n"] + ca + list(flags) + list(extra) + [url])
    p = run_tool(cmd)
    if p.returncode != 0:
        raise Failure("curl exited %d: %s" % (p.returncode, tail(p.stderr)))
    status, version = p.stderr.decode().strip().splitlines()[-1].split()
    return int(status), version, p.stdout


def curl_fetcher(flags, need_h2=False):
    def fetch(m, url):
        status, version, data = curl(m, flags, url)
        if need_h2 and version != "2":
            raise Failure("curl %s negotiated HTTP/%s" % (" ".join(flags), version))
        return status, data
    return fetch


def fetch_requests(m, url):
    r = requests.get(url, verify=m.args.cafile or True, timeout=CLIENT_TIMEOUT)
    return r.status_code, r.content


def httpx_fetcher(http2):
    def fetch(m, url):
        with httpx_client(m.args.cafile, url, http2) as c:
            r = c.get(url)
        if http2 and r.http_version != "HTTP/2":
            raise Failure("httpx negotiated %s, not HTTP/2" % r.http_version)
        return r.status_code, r.content
    return fetch


def fetch_aiohttp(m, url):
    async def get():
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            async with s.get(url, ssl=tls_context(m.args.cafile, url)) as r:
                return r.status, await r.read()
    return asyncio.run(get())


def fetch_wget(m, url):
    ca = ["--ca-certificate", m.args.cafile] if url.startswith("https:") else []
    p = run_tool(["wget", "-q", "-O", "-", "--tries=1", "--timeout=%d" % CLIENT_TIMEOUT] + ca + [url])
    # wget -q prints no status; it exits 0 only on a 2xx, 8 on an error status.
    if p.returncode != 0:
        raise Failure("wget exited %d%s" % (p.returncode, " (error status)" if p.returncode == 8 else ""))
    return 200, p.stdout


def clients_for(m, scheme):
    """(name, fetch) of every decoding client over one listener."""
    out = [("curl --http1.0", curl_fetcher(["--http1.0"])),
           ("curl --http1.1", curl_fetcher(["--http1.1"]))]
    if scheme == "https":
        out += [("curl --http2", curl_fetcher(["--http2"], need_h2=True)),
                ("curl --compressed --http2", curl_fetcher(["--compressed", "--http2"], need_h2=True))]
    else:
        # --http2 on a plain URL asks for an h2c upgrade the site may ignore.
        out += [("curl --http2 (upgrade)", curl_fetcher(["--http2"])),
                ("curl --compressed", curl_fetcher(["--compressed"]))]
        if m.args.h2c:
            out.append(("curl --http2-prior-knowledge",
                        curl_fetcher(["--http2-prior-knowledge"], need_h2=True)))
    out += [("requests", fetch_requests), ("httpx h1", httpx_fetcher(False))]
    if scheme == "https" or m.args.h2c:
        out.append(("httpx h2", httpx_fetcher(True)))
    out += [("aiohttp", fetch_aiohttp), ("wget", fetch_wget)]
    return out


def client_cases(m):
    def static_sha(data):
        if sha(data) != m.args.static_sha256:
            raise Failure("sha256 of the %d-byte body differs" % len(data))

    targets = [("/bytes/50000", lambda data: expect_body(data, body(50_000))),
               ("/stream/%d/%d" % (1 << 20, STREAM_PIECES), lambda data: expect_body(data, body(1 << 20)))]
    if m.static_path():
        targets.append((m.static_path(), static_sha))
    for scheme, base in m.bases():
        for name, fetch in clients_for(m, scheme):
            for path, expect in targets:
                def check(fetch=fetch, url=base + path, expect=expect):
                    status, data = fetch(m, url)
                    expect_status(status)
                    expect(data)

                m.case("%s %s %s" % (name, scheme, path), check)
    if not m.args.static_url:
        m.skip("static file, every client", "no --static-url given")


def curl_brotli_cases(m):
    """curl's own decoder hides a truncated brotli stream: pipe the raw bytes
    to the brotli command-line decoder, which does not."""
    targets = [("http", m.args.base, p) for p in
               ("/bytes/50000", "/stream/%d/%d" % (1 << 20, STREAM_PIECES), "/bytes/%d" % (10 << 20))]
    if m.args.tls_base:
        targets.append(("https", m.args.tls_base, "/bytes/50000"))
    for scheme, base, path in targets:
        def check(base=base, path=path):
            n = int(path.split("/")[2])
            status, _, raw = curl(m, ["-H", "Accept-Encoding: br"], base + path)
            expect_status(status)
            p = run_tool(["brotli", "-d", "-c"], input=raw)
            if p.returncode != 0:
                raise Failure("brotli -d on %d bytes: %s" % (len(raw), tail(p.stderr)))
            expect_body(p.stdout, body(n))

        m.case("curl -H 'Accept-Encoding: br' | brotli -d %s %s" % (scheme, path), check)


# ---------------------------------------------------------------------------
# 3. Uploads
# ---------------------------------------------------------------------------
UPLOAD = os.urandom(3 << 20)
EXPECT_WAIT = 0.9  # curl waits 1 s for a 100 Continue that never comes


def curl_upload(m, base, flags):
    with tempfile.NamedTemporaryFile() as f:
        f.write(UPLOAD)
        f.flush()
        started = time.monotonic()
        # Expect is explicit: when curl sends it on its own varies by version.
        status, version, out = curl(m, flags, base + "/upload",
                                    ["-T", f.name, "-H", "Expect: 100-continue"])
        took = time.monotonic() - started
    expect_status(status)
    expect_upload_answer(out, UPLOAD)
    if took > EXPECT_WAIT:
        raise Failure("a %d MiB upload took %.2f s over HTTP/%s: no 100 Continue?"
                      % (len(UPLOAD) >> 20, took, version))


def upload_cases(m):
    m.case("curl -T 3 MiB (Expect: 100-continue) http", lambda: curl_upload(m, m.args.base, ["--http1.1"]))
    if m.args.tls_base:
        m.case("curl -T 3 MiB (Expect: 100-continue) https h2",
               lambda: curl_upload(m, m.args.tls_base, ["--http2"]))
    for scheme, base in m.bases():
        def with_requests(base=base):
            r = requests.post(base + "/upload", data=UPLOAD, verify=m.args.cafile or True,
                              timeout=CLIENT_TIMEOUT)
            expect_status(r.status_code)
            expect_upload_answer(r.text, UPLOAD)

        def with_httpx(base=base, http2=False):
            with httpx_client(m.args.cafile, base, http2) as c:
                r = c.post(base + "/upload", content=UPLOAD)
            expect_status(r.status_code)
            expect_upload_answer(r.text, UPLOAD)

        def with_aiohttp(base=base):
            async def post():
                timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
                async with aiohttp.ClientSession(timeout=timeout) as s:
                    async with s.post(base + "/upload", data=UPLOAD, ssl=tls_context(m.args.cafile, base)) as r:
                        return r.status, await r.text()
            status, text = asyncio.run(post())
            expect_status(status)
            expect_upload_answer(text, UPLOAD)

        m.case("requests upload 3 MiB %s" % scheme, with_requests)
        m.case("httpx h1 upload 3 MiB %s" % scheme, with_httpx)
        m.case("aiohttp upload 3 MiB %s" % scheme, with_aiohttp)
        if scheme == "https" or m.args.h2c:
            m.case("httpx h2 upload 3 MiB %s" % scheme, lambda base=base: with_httpx(base, http2=True))


# ---------------------------------------------------------------------------
# 4. ab: HTTP/1.0, with and without keep-alive
# ---------------------------------------------------------------------------
def ab_run(url, flags, n):
    p = run_tool(["ab"] + flags + ["-n", str(n), url], timeout=20)
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise Failure("ab exited %d: %s" % (p.returncode, tail(p.stderr) or out[-300:]))

    def number(label):
        found = re.search(r"^%s:\s+(\d+)" % label, out, re.M)
        return int(found.group(1)) if found else 0

    complete, failed, non2xx = number("Complete requests"), number("Failed requests"), number("Non-2xx responses")
    if (complete, failed, non2xx) != (n, 0, 0):
        raise Failure("ab: %d complete, %d failed, %d non-2xx of %d" % (complete, failed, non2xx, n))


def ab_cases(m):
    for scheme, base in m.bases():
        for path in ("/bytes/1000", "/stream/1000/3"):
            m.case("ab -n 20 -c 1 %s %s" % (scheme, path),
                   lambda url=base + path: ab_run(url, ["-c", "1"], 20))
            m.case("ab -k -n 200 -c 4 %s %s" % (scheme, path),
                   lambda url=base + path: ab_run(url, ["-k", "-c", "4"], 200))


# ---------------------------------------------------------------------------
# 5. Streaming: pieces arrive as the app yields them, compressed or not
# ---------------------------------------------------------------------------
FIRST_PIECE_BY = 1.0  # seconds; the whole stream takes (SLOW_PIECES - 1) * 0.3 = 1.2 s


def timed_decode(raw_chunks, coding, started):
    """Feeds raw chunks to a strict decoder; returns (time to the whole first
    piece, total time, decoded body)."""
    decoder = StrictDecoder(coding)
    decoded, first_at = b"", None
    for chunk in raw_chunks:
        decoded += decoder.feed(chunk)
        if first_at is None and len(decoded) >= len(slow_piece(0)):
            first_at = time.monotonic() - started
    decoded += decoder.finish()
    return first_at, time.monotonic() - started, decoded


def check_stream_timing(first_at, total, decoded):
    expect_body(decoded, b"".join(slow_piece(i) for i in range(SLOW_PIECES)))
    # A stream faster than the app's pauses means the case measured nothing.
    if total < (SLOW_PIECES - 1) * SLOW_PAUSE - 0.05:
        raise Failure("whole stream in %.2f s: the app's pauses did not happen" % total)
    if first_at > FIRST_PIECE_BY:
        raise Failure("first piece after %.2f s of a %.2f s stream: the response was buffered"
                      % (first_at, total))


def expect_stream_coding(got, want):
    got = (got or "identity").lower()
    if got != want:
        raise Failure("Content-Encoding %s, want %s" % (got, want))


def h1_slowstream(m, query, accept, want_coding):
    """want_coding None: any encoding will do (it is decoded strictly)."""
    scheme, host, port = split_url(m.args.base)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        started = time.monotonic()
        conn.request("GET", "/slowstream/%d%s" % (SLOW_PIECES, query), headers={"Accept-Encoding": accept})
        r = conn.getresponse()
        expect_status(r.status)
        if want_coding:
            expect_stream_coding(r.getheader("Content-Encoding"), want_coding)
        chunks = iter(lambda: r.read1(65536), b"")
        check_stream_timing(*timed_decode(chunks, r.getheader("Content-Encoding"), started))
    finally:
        conn.close()


def h2_slowstream(m, base, accept, want_coding):
    with H2(base, m.args.cafile) as h2:
        h2.request("GET", "/bytes/1", {})  # the handshake is not part of the timing
        started = time.monotonic()
        with h2.stream("GET", "/slowstream/%d" % SLOW_PIECES, {"Accept-Encoding": accept}) as r:
            expect_status(r.status_code)
            expect_stream_coding(r.headers.get("Content-Encoding"), want_coding)
            check_stream_timing(*timed_decode(r.iter_raw(), r.headers.get("Content-Encoding"), started))


def streaming_cases(m):
    # (label, query, Accept-Encoding, Content-Encoding wanted; None: any)
    variants = [("gzip", "", "gzip", "gzip"),
                ("identity", "", "identity", "identity"),
                ("gzip, X-Accel-Buffering: no", "?xab=no", "gzip", None),
                ("gzip, Cache-Control: no-transform", "?notransform=1", "gzip", "identity")]
    for label, query, accept, want in variants:
        m.case("slowstream h1 %s: first piece < %.1f s" % (label, FIRST_PIECE_BY),
               lambda query=query, accept=accept, want=want: h1_slowstream(m, query, accept, want))
    for label, base in m.h2_bases():
        for accept in ("gzip", "identity"):
            m.case("slowstream %s %s: first piece < %.1f s" % (label, accept, FIRST_PIECE_BY),
                   lambda base=base, accept=accept: h2_slowstream(m, base, accept, accept))


# ---------------------------------------------------------------------------
# 6. Protocol details: HTTP/1.0 close, HEAD = GET, one Vary
# ---------------------------------------------------------------------------
def http10_close(m):
    """RFC 9112 9.3: an HTTP/1.0 request without keep-alive ends with close."""
    scheme, host, port = split_url(m.args.base)
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(b"GET /bytes/10 HTTP/1.0\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 2
        received = b""
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                raise Failure("socket still open 2 s after the request (%d bytes received)" % len(received))
            if not chunk:
                break
            received += chunk
    head, _, data = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not re.match(r"HTTP/1\.[01] 200 ", lines[0]):
        raise Failure("status line %r" % lines[0])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "connection" and "keep-alive" in value.lower():
            raise Failure("answered %r to an HTTP/1.0 request without keep-alive" % line)
    expect_body(data, body(10))


def head_matches_get(m, path):
    """HEAD gets the headers GET would get (RFC 9110 9.3.2), compression included."""
    want = {"Accept-Encoding": "gzip"}
    get = h1_request(m.args.base, "GET", path, want)
    head = h1_request(m.args.base, "HEAD", path, want)
    expect_status(get.status)
    expect_status(head.status)
    if (get.get("Content-Encoding") or "").lower() != "gzip":
        raise Failure("GET was not gzip-compressed, so this case compares nothing")
    # Framing, and what differs per response by design (date, request id).
    framing = {"date", "content-length", "transfer-encoding", "connection", "keep-alive",
               "x-request-id"}

    def comparable(resp):
        return sorted((k.lower(), v) for k, v in resp.headers if k.lower() not in framing)

    if comparable(get) != comparable(head):
        raise Failure("GET headers %s, HEAD headers %s" % (comparable(get), comparable(head)))
    # HEAD may leave out Content-Length, but any it sends is the GET's one.
    if head.get("Content-Length") is not None and head.get("Content-Length") != get.get("Content-Length"):
        raise Failure("HEAD Content-Length %s, GET %s" % (head.get("Content-Length"), get.get("Content-Length")))


def check_one_vary(resp):
    expect_status(resp.status)
    lines = resp.get_all("Vary")
    if len(lines) != 1:
        raise Failure("%d Vary header lines: %r" % (len(lines), lines))
    tokens = {t.strip().lower() for t in lines[0].split(",")}
    if not {"cookie", "accept-encoding"} <= tokens:
        raise Failure("Vary: %s lacks Cookie or Accept-Encoding" % lines[0])
    expect_body(strict_decode(resp.get("Content-Encoding"), resp.data), body(4096))


def protocol_cases(m):
    m.case("HTTP/1.0 without keep-alive is closed after the response", lambda: http10_close(m))
    for path in ("/bytes/50000", "/stream/50000/%d" % STREAM_PIECES):
        m.case("HEAD = GET headers with gzip %s" % path, lambda path=path: head_matches_get(m, path))
    m.case("one Vary (Cookie, Accept-Encoding) h1",
           lambda: check_one_vary(h1_request(m.args.base, "GET", "/vary", {"Accept-Encoding": "gzip"})))
    for label, base in m.h2_bases():
        def over_h2(base=base):
            with H2(base, m.args.cafile) as h2:
                check_one_vary(h2.request("GET", "/vary", {"Accept-Encoding": "gzip"}))

        m.case("one Vary (Cookie, Accept-Encoding) %s" % label, over_h2)


def static_raw_cases(m):
    """The static file as sent to a browser, precompressed siblings included."""
    path = m.static_path()
    if not path:
        return
    browser = CODINGS[-1]

    def check(resp):
        expect_status(resp.status)
        decoded = strict_decode(resp.get("Content-Encoding"), resp.data)
        if sha(decoded) != m.args.static_sha256:
            raise Failure("sha256 of the %d decoded bytes differs" % len(decoded))

    m.case("static h1 [%s] %s" % (browser, path),
           lambda: check(h1_request(m.args.base, "GET", path, {"Accept-Encoding": browser})))
    for label, base in m.h2_bases():
        def over_h2(base=base):
            with H2(base, m.args.cafile) as h2:
                check(h2.request("GET", path, {"Accept-Encoding": browser}))

        m.case("static %s [%s] %s" % (label, browser, path), over_h2)


# ---------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", "--http", required=True, help="http://127.0.0.1:PORT")
    p.add_argument("--tls-base", "--https", help="https://127.0.0.1:PORT")
    p.add_argument("--cafile", help="CA (or self-signed certificate) of the TLS listener")
    p.add_argument("--h2c", action="store_true", help="the plain port speaks h2c (prior knowledge)")
    p.add_argument("--static-url", "--static", help="a static file: URL or path")
    p.add_argument("--static-sha256", help="sha256 of that file")
    p.add_argument("--min-size", type=int, default=1024, help="the site's [compression] min_size")
    p.add_argument("--time-limit", type=float, default=180, help="bound on the whole run, seconds")
    args = p.parse_args(argv)
    args.base = args.base.rstrip("/")
    args.tls_base = args.tls_base.rstrip("/") if args.tls_base else None
    if args.tls_base and not args.cafile:
        p.error("--tls-base needs --cafile")
    if bool(args.static_url) != bool(args.static_sha256):
        p.error("--static-url and --static-sha256 go together")
    for url in filter(None, [args.base, args.tls_base, args.static_url]):
        host = urllib.parse.urlsplit(url).hostname
        if host is not None and host not in LOOPBACK:
            p.error("%s: only loopback is targeted" % url)
    return args


def main(argv=None):
    m = Matrix(parse_args(argv))
    m.start_watchdog(m.args.time_limit)
    if not m.args.tls_base:
        m.skip("TLS and HTTP/2 over TLS", "no --tls-base given")
    if not m.args.h2c:
        m.skip("h2c (curl --http2-prior-knowledge, httpx h2c)", "no --h2c given")
    for group in (protocol_cases, streaming_cases, upload_cases, ab_cases, curl_brotli_cases,
                  client_cases, static_raw_cases, encoded_cases):
        group(m)
    print(m.summary(), flush=True)
    return 1 if m.failed else 0


if __name__ == "__main__":
    sys.exit(main())
