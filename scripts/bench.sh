#!/usr/bin/env bash
# Benchmarks edgehost side by side with a native hyper server (see bench/run.py)
# and writes BENCHMARKS.md. Installs wrk, redis-server and postgresql from
# Debian's packages if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null || missing+=(wrk)
# The key-value runs start private Redis and PostgreSQL servers.
command -v redis-server >/dev/null || missing+=(redis-server)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"
fi
# Same package set everywhere, so features unify and wasmtime compiles once.
cargo build --release -p edgehost -p bench-native
cargo bench --no-run -p edgehost -p bench-native --bench instance
# The key-value posts routes the key-value runs use are test fixtures.
./target/release/edgehost build routes bench/routes tests/fixtures bench/ts/routes examples/tanstack/routes
exec python3 bench/run.py "$@"
