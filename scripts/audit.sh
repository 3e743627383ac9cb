#!/usr/bin/env bash
# Checks every crate in Cargo.lock against the RustSec advisory database
# with cargo-audit (installed with cargo when missing): vulnerabilities fail
# the check unless .cargo/audit.toml accepts them, each with its reason.
#
#   ./scripts/audit.sh                  # against the snapshot in audit/
#   ADVISORY_DB=DIR ./scripts/audit.sh  # against DIR, a fresher copy (a clone
#                                       # of github.com/rustsec/advisory-db)
#   ./scripts/audit.sh --refresh DIR    # replace the snapshot with DIR's
#
# The snapshot keeps the check working without network access; its date is
# printed, and a fresher copy is one --refresh away.
set -euo pipefail
cd "$(dirname "$0")/.."

snapshot=audit/advisory-db.tar.gz
if [ "${1:-}" = "--refresh" ]; then
    from="${2:?--refresh needs the advisory database folder}"
    [ -d "$from/crates" ] || { echo "$from has no crates/ folder: not an advisory database" >&2; exit 1; }
    staging="$(mktemp -d)"
    trap 'rm -rf "$staging"' EXIT
    mkdir "$staging/advisory-db"
    cp -r "$from/crates" "$from/rust" "$staging/advisory-db/"
    for f in LICENSE.txt README.md SNAPSHOT.txt; do
        [ -f "$from/$f" ] && cp "$from/$f" "$staging/advisory-db/"
    done
    if [ ! -f "$from/SNAPSHOT.txt" ]; then
        commit="$(git -C "$from" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
        echo "RustSec advisory database (crates/ and rust/) as of $(date -u +%F) (upstream commit $commit)." \
            > "$staging/advisory-db/SNAPSHOT.txt"
    fi
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="$(date -u +%F) 00:00Z" \
        -C "$staging" -cf - advisory-db | gzip -n -9 > "$snapshot"
    echo "wrote $snapshot: $(cat "$staging/advisory-db/SNAPSHOT.txt")"
    exit 0
fi

if ! command -v cargo-audit >/dev/null; then
    echo "installing cargo-audit with cargo (once; it takes a few minutes)" >&2
    cargo install --locked cargo-audit
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -n "${ADVISORY_DB:-}" ]; then
    cp -r "$ADVISORY_DB" "$work/advisory-db"
else
    tar -xzf "$snapshot" -C "$work"
fi
db="$work/advisory-db"
# cargo-audit reads a git repository: a copy without history becomes one,
# committed at the snapshot's own date so its age is the data's.
if [ ! -d "$db/.git" ]; then
    stamp="$(sed -n 's/.*as of \([0-9-]*\).*/\1/p' "$db/SNAPSHOT.txt" 2>/dev/null | head -1)"
    stamp="${stamp:-$(date -u +%F)}T00:00:00Z"
    git -C "$db" init -q
    git -C "$db" add -A
    GIT_AUTHOR_DATE="$stamp" GIT_COMMITTER_DATE="$stamp" git -C "$db" \
        -c user.name=edgehost-audit -c user.email=audit@edgehost.invalid \
        commit -q -m "advisory database snapshot"
fi
if [ -n "${stamp:-}" ]; then
    age=$(( ($(date -u +%s) - $(date -u -d "$stamp" +%s)) / 86400 ))
    echo "advisory database as of ${stamp%T*} ($age days old; ADVISORY_DB=DIR checks against a fresher one)" >&2
fi
# --stale: the snapshot is as old as its date says, not fetched today.
# .cargo/audit.toml lists the findings accepted, each with its reason.
cargo audit --no-fetch --stale --db "$db" --file Cargo.lock
# The fuzz targets' own dependencies, once fuzz.sh has locked them.
for lock in fuzz/Cargo.lock fuzz/manifest/Cargo.lock; do
    if [ -f "$lock" ]; then
        cargo audit --no-fetch --stale --db "$db" --file "$lock"
    fi
done
