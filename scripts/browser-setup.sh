#!/usr/bin/env bash
# Readies the browser tests (tests/browser.rs): Debian's Chromium when it is
# missing, and the pinned playwright-core of tests/browser/package-lock.json
# installed with `npm ci` into a cache folder (again only when the lock file
# changes). Prints nothing on a machine that is ready.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing chromium for the browser tests" >&2
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

dir="${EDGEHOST_BROWSER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgehost/browser}"
if ! cmp -s tests/browser/package-lock.json "$dir/package-lock.json" \
    || [ ! -d "$dir/node_modules/playwright-core" ]; then
    echo "installing playwright-core into $dir" >&2
    mkdir -p "$dir"
    cp tests/browser/package.json tests/browser/package-lock.json "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
