#!/usr/bin/env bash
# Runs each fuzz target (src/fuzz.rs) for N seconds (default 60): the worker's
# request parser, the config loader, static path resolution, Range parsing,
# the edge's framing check (same verdict however reads split the bytes) and
# its strict head checks. A failure prints the input that broke
# it: add it to SEEDS in src/fuzz.rs once fixed, so it is replayed forever.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
export $(cat target/.corral-python)
export CORRAL_FUZZ_SECS=${1:-60}
cargo test --release --bin corral fuzz_ -- --ignored --test-threads 2 --nocapture
