#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then integration tests that start
# the real corral binary with real Python apps and talk to it over sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh --test
export $(cat target/.corral-python)
export CORRAL_TEST_VENV=${CORRAL_TEST_VENV:-$PWD/target/test-venv}
cargo build --release --all-targets
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --release --no-fail-fast
else
    cargo test --release --no-fail-fast
fi
