#!/usr/bin/env bash
# Runs every test: builds the route and fixture components for wasm32-wasip2
# (installing the target if needed), then the unit, doc and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo run --quiet -p edgehost -- build routes tests/fixtures
cargo test --workspace "$@"
