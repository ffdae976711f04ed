#!/usr/bin/env bash
# Side-by-side benchmark: corral vs nginx + gunicorn, gunicorn, granian,
# uwsgi, uvicorn (alone, under gunicorn, behind nginx), gunicorn's own ASGI
# worker and nginx, alternating servers round by round (A B C A B C). Installs
# what it needs: nginx, wrk and h2load from Debian; gunicorn, granian,
# pyuwsgi and Flask into target/bench-venv.
#   ./benches/run.sh [--rounds N] [--duration S] [scenario ...]
# Scenarios: hello flask asgi-hello fastapi io overload static-small static-large tls
#            tls-handshake tls-rsa tls-handshake-rsa h2 slowloris (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
export $(cat target/.corral-python)
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
venv=target/bench-venv
if [ ! -x "$venv/bin/granian" ] || [ ! -x "$venv/bin/uwsgi" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check gunicorn granian pyuwsgi flask
fi
if [ ! -x "$venv/bin/uvicorn" ] || ! "$venv/bin/python" -c "import fastapi, uvicorn_worker, uvloop, httptools" 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check "uvicorn[standard]" uvicorn-worker fastapi
fi
# gunicorn's own ASGI worker (-k asgi) came with gunicorn 25.1.
if ! "$venv/bin/python" -c "import gunicorn.workers.gasgi" 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check --upgrade "gunicorn>=25.1"
fi
cargo build --release
exec python3 benches/bench.py --venv "$venv" "$@"
