#!/usr/bin/env bash
# Builds corral and runs the bundled demo (config/site.toml) on
# http://127.0.0.1:8080/. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
export $(cat target/.corral-python)
cargo build --release
exec ./target/release/corral serve --config config/site.toml
