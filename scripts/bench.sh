#!/usr/bin/env bash
# Benchmarks edgehost side by side with a native hyper server (see bench/run.py)
# and writes BENCHMARKS.md. Installs wrk from Debian's packages if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk
fi
# Same package set everywhere, so features unify and wasmtime compiles once.
cargo build --release -p edgehost -p bench-native
cargo bench --no-run -p edgehost -p bench-native --bench instance
./target/release/edgehost build routes bench/routes
exec python3 bench/run.py "$@"
