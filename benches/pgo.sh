#!/usr/bin/env bash
# converge built with profile-guided optimization (PGO): an instrumented
# build runs the benchmark workloads (`converge-load gate`, the gate race's,
# and the example rules' handoffs), LLVM merges what it counted, and a
# second release build lays out and inlines the daemon's code by it.
#
#   bash benches/pgo.sh        # prints the optimized binary's path at the end
#
# Needs rustup's llvm-tools, for an llvm-profdata that reads what this
# rustc's LLVM writes (`rustup component add llvm-tools`), and the
# webhook-out plugin the workloads call:
#   cargo build --profile wasm --target wasm32-wasip2 -p webhook-out
# It makes two release builds of the daemon in directories of their own
# under $CARGO_TARGET_DIR/pgo (else target/pgo), so the ordinary build is
# left alone: about 20 minutes on 2 cores. docs/deploy.md says what it
# gains and when to rebuild it.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
PGO="$TARGET/pgo"

fail() { echo "pgo.sh: $*" >&2; exit 1; }
host="$(rustc -vV | sed -n 's/^host: //p')"
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
[ -x "$profdata" ] || fail "llvm-profdata not found: rustup component add llvm-tools"
[ -f "$TARGET/wasm32-wasip2/wasm/webhook_out.wasm" ] ||
    fail "the webhook-out plugin is not built: cargo build --profile wasm --target wasm32-wasip2 -p webhook-out"

cd "$ROOT"
echo "pgo.sh: 1/4 the instrumented build ($PGO/instrumented)"
# Build scripts and proc macros are instrumented too and write their counts
# here while they run; only the daemon's, below, are merged.
RUSTFLAGS="-Cprofile-generate=$PGO/build-counts" CARGO_TARGET_DIR="$PGO/instrumented" \
    cargo build --release -p converge
cargo build --release -p converge-load

echo "pgo.sh: 2/4 training on the benchmark workloads"
rm -rf "$PGO/counts"
mkdir -p "$PGO/counts"
# %m: one file per binary, which every run of it adds to.
export LLVM_PROFILE_FILE="$PGO/counts/converge-%m.profraw"
load="$TARGET/release/converge-load"
"$load" gate --events 100000 --converge "$PGO/instrumented/release/converge"
"$load" --events 60000 --converge "$PGO/instrumented/release/converge"
unset LLVM_PROFILE_FILE
ls "$PGO"/counts/*.profraw > /dev/null 2>&1 || fail "the daemon wrote no counts (did it stop cleanly?)"

echo "pgo.sh: 3/4 merging the counts"
"$profdata" merge -o "$PGO/converge.profdata" "$PGO"/counts/*.profraw

echo "pgo.sh: 4/4 the optimized build ($PGO/optimized)"
RUSTFLAGS="-Cprofile-use=$PGO/converge.profdata" CARGO_TARGET_DIR="$PGO/optimized" \
    cargo build --release -p converge
echo "pgo.sh: built $PGO/optimized/release/converge"
