#!/bin/bash
# Instructions the edge runs per request, counted by valgrind's callgrind.
#
# Why: on a shared VM the same binary's CPU µs per request varies by ±15%
# from one round to the next, so a change worth 3% cannot be seen in a
# wall-clock A/B. An instruction count is the same from run to run (to a
# few hundred in ~45,000), so a change to the request path is judged in one
# run. It is not time: the kernel's share, cache misses and wake-ups are
# not in it, so confirm a gain with ./benches/run.sh --baseline.
#
# usage: benches/instructions.sh [BINARY ...]
#   env SCENARIO=static (default: a cached 4 KiB file over HTTP/1.1
#   keep-alive, h2load -c 8) or SCENARIO=h2 (the same over h2c, -m 10).
#   env KEEP=1 keeps the work folder (config, serve.log, callgrind.out.*)
#   for callgrind_annotate.
# Needs valgrind (apt-get install valgrind) and h2load (nghttp2-client).
# Runs each binary twice (2,000 and 12,000 requests) and prints the
# difference per request, so start-up is not counted.
set -euo pipefail
# Binaries named relative to where this is run from.
BINS=()
for b in "$@"; do BINS+=("$(realpath "$b")"); done
cd "$(dirname "$0")/.."
ROOT=$PWD
[ ${#BINS[@]} -gt 0 ] || BINS=("$ROOT/target/release/corral")
SCENARIO=${SCENARIO:-static}
PORT=${PORT:-18690}
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install valgrind" >&2; exit 2; }
command -v h2load >/dev/null || { echo "needs h2load: apt-get install nghttp2-client" >&2; exit 2; }

WORK=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
mkdir -p "$WORK/static"
head -c 4096 /dev/urandom > "$WORK/static/small.bin"
VENV=""
[ -d "$ROOT/target/bench-venv" ] && VENV="virtualenv = \"$ROOT/target/bench-venv\""
H2C=""
[ "$SCENARIO" = h2 ] && H2C="h2c = true"
cat > "$WORK/site.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
$H2C
[app]
module = "hello:application"
chdir = "$ROOT/benches/apps"
workers = 1
$VENV
[[static]]
url = "/static/"
dir = "$WORK/static"
[compression]
enabled = false
[log]
access = "off"
level = "warn"
EOF

# The edge's instructions after N requests. The process title is written
# over argv, where valgrind keeps its own options, so the output file keeps
# callgrind's default name (in the current folder) rather than one given.
edge_instructions() {
    local bin=$1 n=$2
    (cd "$WORK" && rm -f callgrind.out.*)
    (cd "$WORK" && exec valgrind --tool=callgrind --dump-instr=no \
        "$bin" serve --config "$WORK/site.toml" > "$WORK/serve.log" 2>&1) &
    local master=$!
    for _ in $(seq 240); do
        curl -fs -o /dev/null "http://127.0.0.1:$PORT/static/small.bin" && break
        sleep 0.5
    done
    local load=(--h1 -m 1)
    [ "$SCENARIO" = h2 ] && load=(-m 10)
    h2load "${load[@]}" -n "$n" -c 8 "http://127.0.0.1:$PORT/static/small.bin" \
        | grep -q "$n succeeded" || { echo "h2load failed" >&2; kill -TERM $master; exit 1; }
    # The edge dumps its counts when it exits; the master then starts
    # another, and is stopped in turn.
    local edge
    edge=$(ps --ppid $master -o pid=,args= | awk '/edge/ {print $1; exit}')
    kill -TERM "$edge"
    for _ in $(seq 60); do [ -s "$WORK/callgrind.out.$edge" ] && break; sleep 0.5; done
    sleep 1
    kill -TERM $master
    wait $master 2>/dev/null || true
    # Children under valgrind take a moment to go: the next run needs the port.
    for _ in $(seq 60); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/" || break
        sleep 0.5
    done
    awk '/^summary:/ {print $2}' "$WORK/callgrind.out.$edge"
}

for bin in "${BINS[@]}"; do
    small=$(edge_instructions "$bin" 2000)
    large=$(edge_instructions "$bin" 12000)
    echo "$bin ($SCENARIO): $(( (large - small) / 10000 )) instructions per request"
done
