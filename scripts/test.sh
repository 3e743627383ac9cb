#!/usr/bin/env bash
# Runs every test: builds the test binaries and the host once, uses that host
# to build the route and fixture components for wasm32-wasip2 (installing the
# target if needed), then runs the unit, doc and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# One build with the workspace's unified features: a separate `cargo run -p
# edgehost` would resolve other features and compile wasmtime a second time.
cargo test --workspace --no-run
"${CARGO_TARGET_DIR:-target}/debug/edgehost" build routes tests/fixtures
cargo test --workspace "$@"
