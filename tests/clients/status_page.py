"""Loads corral's status page (the metrics listener's `/`) in headless
chromium, driven over the Chrome DevTools Protocol, and checks it works:
it polls, draws its charts, lists the workers, fetches nothing from any
other host; then saves a screenshot.

    status_page.py --url http://127.0.0.1:PORT/ --screenshot out.png
                   [--seconds 6] [--chromium chromium]

One line per check ("ok: ..." / "FAIL: ..."), then "N checks, M failures";
exit status 1 if any failed. (Not checks.py: its last line has no count of
checks.)"""
import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from websockets.sync.client import connect

checks = 0
failures = 0


def check(ok, what):
    global checks, failures
    checks += 1
    failures += not ok
    print(("ok: " if ok else "FAIL: ") + what, flush=True)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cdp:
    """One page's DevTools connection: commands in order, events kept."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events = []

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return json.loads(self.ws.recv(timeout=left))

    def call(self, method, timeout=15, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self._recv(deadline)
            except TimeoutError:
                raise RuntimeError(f"{method}: no answer in {timeout} s") from None
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method, timeout, since=None):
        """Waits for an event (kept from index `since` on; by default, one
        not seen yet); False if none came in time."""
        seen = len(self.events) if since is None else since
        deadline = time.monotonic() + timeout
        while True:
            if any(e["method"] == method for e in self.events[seen:]):
                return True
            try:
                msg = self._recv(deadline)
            except TimeoutError:
                return False
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")


def page_target(port, proc, log_path, timeout=20):
    """The page's webSocketDebuggerUrl, once chromium answers."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                targets = json.load(r)
            for t in targets:
                if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                    return t["webSocketDebuggerUrl"]
            last = f"no page among {len(targets)} targets"
        except OSError as e:
            last = e
        time.sleep(0.25)
    with open(log_path, errors="replace") as f:
        tail = f.read()[-2000:]
    raise RuntimeError(f"chromium (exit {proc.poll()}) not ready in {timeout} s: {last}\n{tail}")


def run(args, cdp):
    origin = urllib.parse.urlsplit(args.url)
    cdp.call("Network.enable")
    cdp.call("Page.enable")
    cdp.call("Runtime.enable")
    cdp.call("Emulation.setDeviceMetricsOverride", width=1280, height=960,
             deviceScaleFactor=1, mobile=False)
    mark = len(cdp.events)
    nav = cdp.call("Page.navigate", url=args.url)
    if not check("errorText" not in nav, f"navigated to {args.url} {nav.get('errorText', '')}"):
        return
    check(cdp.wait_event("Page.loadEventFired", 15, since=mark), "page loaded")
    title = cdp.evaluate("document.title")
    check(title == "corral status", f"title is {title!r}")

    samples = []
    end = time.monotonic() + args.seconds
    while True:
        raw = cdp.evaluate("JSON.stringify(window.corralStatus)")
        if raw:
            samples.append(json.loads(raw))
        if time.monotonic() >= end:
            break
        # Sleeps a second, keeping the events that come meanwhile.
        cdp.wait_event("(none)", min(1.0, max(0.0, end - time.monotonic())))
    if not check(samples, "window.corralStatus is set"):
        return
    first, last = samples[0], samples[-1]
    print(f"     first {json.dumps(first)}\n     last  {json.dumps(last)}", flush=True)
    polls = [s["polls"] for s in samples]
    check(polls == sorted(polls) and last["polls"] > first["polls"],
          f"polls increase over time: {polls}")
    check(last["errors"] == 0, f"no failed polls ({last['errors']})")
    check(last["workers"] >= 1, f"workers in the table: {last['workers']}")
    rps = [s["points"]["rps"] for s in samples]
    check(last["points"]["rps"] >= 3 and rps[-1] > rps[0], f"requests/s points grow: {rps}")
    queue = [s["points"]["queue"] for s in samples]
    check(last["points"]["queue"] >= 3 and queue[-1] > queue[0], f"queue depth points grow: {queue}")
    print(f"     latency points {last['points']['latency']}, "
          f"queue wait points {last['points']['wait']} (depend on traffic)", flush=True)

    shot = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
    with open(args.screenshot, "wb") as f:
        f.write(shot)
    check(shot.startswith(b"\x89PNG\r\n\x1a\n") and len(shot) > 10_000,
          f"screenshot {args.screenshot}: PNG, {len(shot)} bytes")

    exceptions = [e["params"]["exceptionDetails"] for e in cdp.events
                  if e["method"] == "Runtime.exceptionThrown"]
    check(not exceptions, "no JavaScript exceptions"
          + "".join(f"\n     {x.get('text')} {x.get('exception', {}).get('description', '')}"
                    for x in exceptions))
    urls = [e["params"]["request"]["url"] for e in cdp.events
            if e["method"] == "Network.requestWillBeSent"]
    foreign = sorted({u for u in urls
                      if urllib.parse.urlsplit(u).scheme not in ("data", "blob", "about")
                      and urllib.parse.urlsplit(u).netloc != origin.netloc})
    check(not foreign, f"no request to another host ({len(urls)} requests){''.join(' ' + u for u in foreign)}")
    paths = {urllib.parse.urlsplit(u).path for u in urls}
    wanted = {urllib.parse.urljoin(origin.path or "/", p) for p in ("metrics", "status.json")}
    check(wanted <= paths, f"fetched {sorted(wanted)}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--screenshot", required=True)
    p.add_argument("--seconds", type=float, default=6)
    p.add_argument("--chromium", default="chromium")
    args = p.parse_args()

    profile = tempfile.mkdtemp(prefix="corral-status-page-")
    log_path = os.path.join(profile, "chromium.log")
    port = free_port()
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [args.chromium, "--headless", "--no-sandbox", "--disable-gpu",
                 f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                 "--no-first-run", "--no-default-browser-check", "--window-size=1280,960",
                 "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)  # its own process group: all of it is killed below
        # Screenshots come back base64 in one message: no size limit.
        with connect(page_target(port, proc, log_path), max_size=None, open_timeout=10) as ws:
            run(args, Cdp(ws))
    except Exception as e:  # noqa: BLE001 -- any failure is a failed check
        check(False, f"{type(e).__name__}: {e}")
    finally:
        if proc:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass
            # Its helpers (same process group) may outlive it a moment.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(profile, ignore_errors=True)
    print(f"{checks} checks, {failures} failures", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
