#!/usr/bin/env bash
# Fuzzes the parsers that read what clients, manifests and webhook senders
# write (fuzz/fuzz_targets) with libFuzzer: each target for SECONDS (default
# 60), from the seeds in fuzz/corpus/<target>. `manifest` (the manifest
# checker, which links the whole host) runs only when named. New inputs go to a temporary
# folder (pass --keep to add them to fuzz/corpus); a crash stops the run,
# its input saved as fuzz/crash-<target>-*. Needs no nightly toolchain: the
# coverage instrumentation flags below are stable.
#
#   ./scripts/fuzz.sh [SECONDS] [--keep] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
keep=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        [0-9]*) seconds="$arg" ;;
        *) targets+=("$arg") ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(router allowed_host quantity stripe_signature request_id)

# With --target, RUSTFLAGS reach the fuzzed crate and its dependencies but
# not build scripts or proc macros, which must not be instrumented.
triple="$(rustc -vV | sed -n 's/^host: //p')"
target_dir="${CARGO_TARGET_DIR:-target}/fuzz"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
small=()
for target in "${targets[@]}"; do
    [ "$target" = manifest ] || small+=("--bin" "$target")
done
if [ ${#small[@]} -gt 0 ]; then
    cargo build --release --manifest-path fuzz/Cargo.toml --target "$triple" \
        --target-dir "$target_dir" "${small[@]}"
fi
# The manifest target links the whole host: its build is kept outside the
# checkout (EDGEHOST_FUZZ_CACHE), so only the first one is slow.
manifest_dir="${EDGEHOST_FUZZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgehost}/fuzz-manifest-target"
if printf '%s\n' "${targets[@]}" | grep -qx manifest; then
    cargo build --release --manifest-path fuzz/manifest/Cargo.toml --target "$triple" \
        --target-dir "$manifest_dir"
fi
binary() {
    if [ "$1" = manifest ]; then
        echo "$manifest_dir/$triple/release/manifest"
    else
        echo "$target_dir/$triple/release/$1"
    fi
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
    new="$work/$target"
    mkdir -p "$new"
    [ "$keep" -eq 1 ] && new="fuzz/corpus/$target"
    echo "fuzzing $target for ${seconds}s" >&2
    "$(binary "$target")" "$new" "fuzz/corpus/$target" \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
        -artifact_prefix="fuzz/crash-$target-" -print_final_stats=1 2>"$work/$target.log" || {
        tail -40 "$work/$target.log" >&2
        echo "fuzz target $target failed: its input is in fuzz/crash-$target-*" >&2
        exit 1
    }
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$work/$target.log" \
        | sed "s/^/$target: /" >&2
done
