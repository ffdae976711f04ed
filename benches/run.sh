#!/usr/bin/env bash
# Side-by-side benchmark: corral vs nginx + gunicorn (and whatever else
# bench.py knows), alternating servers over several rounds. Installs what it
# needs (nginx and wrk from Debian, gunicorn into target/bench-venv).
#   ./benches/run.sh [--rounds N] [--duration S] [scenario ...]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
export $(cat target/.corral-python)
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
venv=target/bench-venv
if [ ! -x "$venv/bin/gunicorn" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check gunicorn flask
fi
cargo build --release
exec python3 benches/bench.py --venv "$venv" "$@"
