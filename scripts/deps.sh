#!/usr/bin/env bash
# Installs what building and testing corral needs on Debian, as root:
# cmake (pingora's zlib-ng), make (jemalloc's build), curl (tests use it as a
# client), a Python with a
# shared libpython (pyo3 embeds it), and the test virtualenv with Flask.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v make >/dev/null || need_apt+=(make)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
if [ "${1:-}" = "--test" ]; then
    # Third-party clients the tests drive: ab (apache2-utils), wget, brotli,
    # chromium.
    command -v ab >/dev/null || need_apt+=(apache2-utils)
    command -v wget >/dev/null || need_apt+=(wget)
    command -v brotli >/dev/null || need_apt+=(brotli)
    # h2load: an HTTP/2 load that ends with streams still open.
    command -v h2load >/dev/null || need_apt+=(nghttp2-client)
    # A real browser for the WebSocket page test.
    command -v chromium >/dev/null || need_apt+=(chromium)
    # systemd's own socket activation and unit checker (not systemd running).
    command -v systemd-socket-activate >/dev/null || need_apt+=(systemd)
    # A real load balancer in front of several instances.
    command -v haproxy >/dev/null || need_apt+=(haproxy)
    # A real Prometheus server scraping corral's metrics.
    command -v prometheus >/dev/null || need_apt+=(prometheus)
    # Let's Encrypt's test CA (and its fake DNS) for automatic HTTPS.
    command -v pebble >/dev/null || need_apt+=(pebble)
fi

PY=${PYO3_PYTHON:-python3}
shared=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("Py_ENABLE_SHARED") or 0)' 2>/dev/null || echo none)
if [ "$shared" != "1" ]; then
    # Debian's python3 ships libpython3.X.so in python3-dev.
    need_apt+=(python3 python3-dev python3-venv)
    PY=/usr/bin/python3
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "deps: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
    echo "deps: cargo not found; install Rust (https://rustup.rs) and run again" >&2
    exit 1
fi

# The venv the Flask tests use; made from the same Python corral embeds.
venv=${CORRAL_TEST_VENV:-$PWD/target/test-venv}
if [ "${1:-}" = "--test" ] && [ ! -x "$venv/bin/flask" ]; then
    echo "deps: creating $venv with Flask"
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check flask
fi
# Third-party Python clients and strict decoders the client matrix uses.
if [ "${1:-}" = "--test" ] && ! "$venv/bin/python" -c "import requests, httpx, h2, aiohttp, brotli, zstandard" 2>/dev/null; then
    echo "deps: installing requests, httpx[http2], aiohttp, h2, brotli, zstandard into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check requests "httpx[http2]" aiohttp h2 brotli zstandard
fi
# ASGI apps and WebSocket clients the ASGI tests use.
if [ "${1:-}" = "--test" ] && ! "$venv/bin/python" -c "import fastapi, starlette, litestar, uvloop, websockets, websocket, django, channels, quart, wsproto, yaml, prometheus_client" 2>/dev/null; then
    echo "deps: installing fastapi, litestar, uvloop, websockets, websocket-client, django, channels, quart, wsproto, pyyaml, prometheus_client into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check fastapi litestar uvloop websockets websocket-client django channels quart wsproto pyyaml prometheus_client
fi
echo "PYO3_PYTHON=$PY" > target/.corral-python 2>/dev/null || { mkdir -p target && echo "PYO3_PYTHON=$PY" > target/.corral-python; }
