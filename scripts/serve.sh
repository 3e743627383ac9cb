#!/usr/bin/env bash
# Builds the host and the example routes, then serves manifest.toml on
# 127.0.0.1:8080 (extra arguments go to `edgehost serve`, e.g. --listen).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p edgehost
./target/release/edgehost build routes
if [ -z "${STRIPE_WEBHOOK_SECRET:-}" ]; then
    # The webhook route needs a secret; a local run gets the documented test one.
    export STRIPE_WEBHOOK_SECRET=whsec_test_secret
    echo "STRIPE_WEBHOOK_SECRET is not set; using the test secret whsec_test_secret" >&2
fi
exec ./target/release/edgehost serve --manifest manifest.toml "$@"
