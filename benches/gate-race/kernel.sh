#!/usr/bin/env bash
# Where the daemon's CPU goes between its own code and the kernel's, by
# thread and by system call, sampled with perf while converge-load runs.
# count.sh counts the instructions of converge's own code only; this shows
# the rest (sockets, the WAL's writes, fsyncs, wake-ups: about a third of
# the daemon's CPU).
#
#   bash benches/gate-race/kernel.sh [--handoffs] [SECONDS]
#
# The gate workload: `converge-load gate` with 160,000 events (the race's
# config and sink). The handoff workload: converge-load's default run
# (the example rules, a webhook-out action per event), 300,000 events.
# Either way perf samples the daemon (`cpu-clock`, 999 a second, with call
# chains) for SECONDS (default 5), from 2 s after the daemon starts: the
# samples fall in the middle of the load, not its start or end. Samples are timed,
# so shares move with the machine less than times do, but they move; take
# two runs before trusting a difference of a few percent.
#
# Needs perf (linux-perf on Debian; run as root or with
# kernel.perf_event_paranoid <= 1), node, converge-load and converge built
# (cargo build --release -p converge -p converge-load, and the webhook-out
# plugin as for run.sh). Files in OUT (default: a new directory in /tmp):
# the converge-load output, perf.data and the samples as text.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORKLOAD=gate
if [ "${1:-}" = "--handoffs" ]; then WORKLOAD=handoffs; shift; fi
SECONDS_SAMPLED="${1:-5}"
OUT="${OUT:-$(mktemp -d "/tmp/$WORKLOAD-kernel.XXXXXX")}"

fail() { echo "kernel.sh: $*" >&2; exit 1; }
# shellcheck source=common.sh
. "$HERE/common.sh"
command -v perf >/dev/null || fail "perf is not installed (apt-get install linux-perf)"
command -v node >/dev/null || fail "node is not installed"
require_converge
require_load
make_out

# converge-load starts the daemon through this wrapper, which leaves the
# daemon's pid where this script finds it.
printf '#!/bin/sh\necho $$ > "%s/daemon.pid"\nexec "%s" "$@"\n' "$OUT" "$CONVERGE" > "$OUT/converge"
chmod +x "$OUT/converge"

case "$WORKLOAD" in
gate) "$LOAD" gate --events 160000 --converge "$OUT/converge" > "$OUT/load.txt" 2>&1 & ;;
handoffs) "$LOAD" --events 300000 --converge "$OUT/converge" > "$OUT/load.txt" 2>&1 & ;;
esac
LOAD_PID=$!
pids+=("$LOAD_PID")

for _ in $(seq 1 600); do
    [ -s "$OUT/daemon.pid" ] && break
    kill -0 "$LOAD_PID" 2>/dev/null || { cat "$OUT/load.txt" >&2; fail "converge-load ended before the daemon started"; }
    sleep 0.1
done
[ -s "$OUT/daemon.pid" ] || fail "the daemon did not start"
DAEMON="$(cat "$OUT/daemon.pid")"
sleep 2
kill -0 "$DAEMON" 2>/dev/null || fail "the daemon ended before it was sampled (see $OUT/load.txt)"
echo "kernel: sampling converge (pid $DAEMON) for $SECONDS_SAMPLED s under the $WORKLOAD workload; files in $OUT"
perf record -q -e cpu-clock -F 999 -g -p "$DAEMON" -o "$OUT/perf.data" -- sleep "$SECONDS_SAMPLED" 2> "$OUT/perf-record.log" ||
    { cat "$OUT/perf-record.log" >&2; fail "perf record failed"; }
wait "$LOAD_PID" || { tail -n 20 "$OUT/load.txt" >&2; fail "converge-load failed (see $OUT/load.txt)"; }
perf script -i "$OUT/perf.data" 2> /dev/null > "$OUT/samples.txt"
grep -m 3 "req/s\|events/s" "$OUT/load.txt" || true
echo
node "$HERE/kernel.js" < "$OUT/samples.txt"
