#!/usr/bin/env bash
# Instructions per event, by thread, counted under callgrind. Counts do not
# move with the machine as times do (docs/performance.md, "Counted rather
# than timed"), so two builds can be compared by one run each.
#
#   bash benches/gate-race/count.sh [EVENTS]              # the gate workload
#   bash benches/gate-race/count.sh --handoffs [EVENTS]   # converge-load's handoffs
#
# The gate workload: converge on the race's config, EVENTS of the race's
# events (default 3000) sent once each by wrk with once.lua, every decision
# waited for at the sink, then SIGTERM. Needs wrk.
#
# The handoff workload: converge-load's default run (the example rules, a
# webhook-out action per event), EVENTS handoffs over EVENTS/20 tasks, so
# that each task is handed on 20 times as in 100,000 handoffs over 5,000
# tasks. converge-load starts the daemon through a wrapper that runs it
# under callgrind, waits for every action and stops it with SIGTERM. Needs
# converge-load (cargo build --release -p converge-load).
#
# Both need valgrind, node and converge built as for run.sh (CONVERGE and
# WEBHOOK_OUT override where they are looked for), and run at most 6 plugin
# calls at once: under valgrind wasmtime can reserve the memory of a few
# instances only (neither the pool nor 64 instances of 4 GiB fit); with
# more, calls fail and are retried, and the counts would hold the retries.
# Under valgrind the daemon runs about fifty times slower: a few minutes
# for 3,000 events. The daemon is started three times: to compile the
# plugin into the cache, idle (what starting and stopping cost), and under
# load; the idle run's count is taken off the loaded one's, thread by
# thread. The daemon logs at its default level on the gate workload, at
# `warn` on the handoffs (as converge-load starts it). Everything listens on
# 127.0.0.1.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORKLOAD=gate
if [ "${1:-}" = "--handoffs" ]; then WORKLOAD=handoffs; shift; fi
EVENTS="${1:-3000}"
OUT="${OUT:-$(mktemp -d "/tmp/$WORKLOAD-count.XXXXXX")}"

fail() { echo "count.sh: $*" >&2; exit 1; }
# shellcheck source=common.sh
. "$HERE/common.sh"
command -v valgrind >/dev/null || fail "valgrind is not installed (apt-get install valgrind)"
command -v node >/dev/null || fail "node is not installed"
require_converge
make_out
echo "count: $EVENTS $WORKLOAD events under callgrind; files in $OUT"

no_failed_actions() {
    if grep -q "action failed" "$1/converge.log"; then
        fail "actions failed under valgrind (see $1/converge.log): the counts would hold their retries"
    fi
}

# Starts the daemon under callgrind on the race's config (6 plugin calls at
# once), runs "$2" (a command, or `true`), stops it.
gate_counted() {
    local run="$1" load="$2"
    converge_config "$run"
    sed -i "s|^concurrency = .*|concurrency = 6|" "$run/converge.toml"
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$run/callgrind.%p" \
        "$CONVERGE" run --config "$run/converge.toml" > "$run/converge.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    local up=no
    for _ in $(seq 1 600); do
        curl -s -o /dev/null -m 2 "http://127.0.0.1:$CONVERGE_PORT/healthz" && { up=yes; break; }
        sleep 0.5
    done
    [ "$up" = yes ] || { tail -n 20 "$run/converge.log" >&2; fail "converge did not start"; }
    $load
    kill -TERM "$pid"
    wait "$pid" || true
    no_failed_actions "$run"
}

gate_send() {
    curl -s -m 5 -X POST "http://127.0.0.1:$SINK_PORT/reset" > /dev/null
    EVENTS="$OUT/events.ce.jsonl" CT="application/cloudevents+json" timeout 1800 \
        wrk -t1 -c32 -d1800s -s "$HERE/once.lua" "http://127.0.0.1:$CONVERGE_PORT/hooks/gate" > "$OUT/wrk.txt" 2>&1 || true
    local total=0
    for _ in $(seq 1 600); do
        total=$(curl -s -m 5 "http://127.0.0.1:$SINK_PORT/stats" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).total))')
        [ "$total" -ge "$EVENTS" ] && return
        sleep 1
    done
    fail "the sink holds $total of $EVENTS decisions"
}

# converge-load's handoffs, $2 of them (0: idle), the daemon under
# callgrind with its files in $1: converge-load starts it through the
# wrapper written below, which finds the directory in COUNT_DIR.
handoffs_counted() {
    local run="$1" events="$2"
    mkdir -p "$run"
    COUNT_DIR="$run" "$LOAD" --converge "$OUT/converge-under-callgrind" \
        --events "$events" --entities "$(( events >= 20 ? events / 20 : 1 ))" \
        --concurrency 8 --dispatch-concurrency 6 > "$run/load.txt" 2> "$run/converge.log" ||
        { tail -n 20 "$run/converge.log" >&2; fail "converge-load failed (see $run)"; }
    no_failed_actions "$run"
    if [ "$events" -gt 0 ] && ! grep -q "^actions: $events of $events arrived" "$run/load.txt"; then
        fail "not every action arrived (see $run/load.txt)"
    fi
}

case "$WORKLOAD" in
gate)
    command -v wrk >/dev/null || fail "wrk is not installed: bash $HERE/install.sh"
    require_free_ports $SINK_PORT $CONVERGE_PORT
    start_sink
    node "$HERE/events.js" "$EVENTS" "$OUT/events.jsonl" "count-$(date +%s)" > /dev/null
    node "$HERE/ce.js" "$OUT/events.jsonl" "$OUT/events.ce.jsonl" "/race/count" > /dev/null
    gate_counted "$OUT/compile" true
    gate_counted "$OUT/idle" true
    gate_counted "$OUT/loaded" gate_send
    ;;
handoffs)
    require_load
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$COUNT_DIR/callgrind.%%p" "%s" "$@"\n' \
        "$CONVERGE" > "$OUT/converge-under-callgrind"
    chmod +x "$OUT/converge-under-callgrind"
    # Under valgrind, as the counted runs: wasmtime sees another CPU there,
    # and compiles for it.
    handoffs_counted "$OUT/compile" 0
    handoffs_counted "$OUT/idle" 0
    handoffs_counted "$OUT/loaded" "$EVENTS"
    ;;
esac

# Each thread's instructions, by what it runs: "<role> <instructions>".
roles() {
    local file role
    for file in "$1"/callgrind.*-*; do
        # The processor's and the writer's files can name the runtime's
        # worker too (a task woken from them), so they are looked for first.
        role=other
        if grep -q "converge::processor::Processor::run" "$file"; then role=processor
        elif grep -q "converge::journal::Writer::" "$file"; then role=writer
        elif grep -q "converge_store::sqlite::checkpoint::checkpoint" "$file"; then role=checkpointer
        elif grep -q "tokio::runtime::scheduler::multi_thread::worker::run" "$file"; then role=tokio
        fi
        echo "$role $(awk '/^summary:/ {print $2}' "$file")"
    done
}


roles "$OUT/idle" > "$OUT/idle.txt"
roles "$OUT/loaded" > "$OUT/loaded.txt"
node - "$OUT/idle.txt" "$OUT/loaded.txt" "$EVENTS" <<'EOF'
const fs = require("fs");
const [idleFile, loadedFile, events] = process.argv.slice(2);
const sum = (file) => {
  const by = {};
  for (const line of fs.readFileSync(file, "utf8").trim().split("\n")) {
    const [role, n] = line.split(" ");
    by[role] = (by[role] || 0) + Number(n);
  }
  return by;
};
const idle = sum(idleFile), loaded = sum(loadedFile);
const names = {
  tokio: "tokio workers (HTTP in and out, dispatcher, plugin calls)",
  processor: "processor (rules)",
  writer: "journal writer",
  checkpointer: "checkpointer",
  other: "other threads (start, plugin compilation, blocking pool)",
};
const fmt = (n) => Math.round(n).toLocaleString("en-US");
console.log(`\ninstructions per event, ${fmt(events)} events (loaded run less idle run):`);
console.log("| thread | loaded | idle | per event |");
console.log("| --- | --- | --- | --- |");
let allLoaded = 0, allIdle = 0;
for (const role of ["tokio", "processor", "writer", "checkpointer", "other"]) {
  const l = loaded[role] || 0, i = idle[role] || 0;
  allLoaded += l;
  allIdle += i;
  console.log(`| ${names[role]} | ${fmt(l)} | ${fmt(i)} | ${fmt((l - i) / events)} |`);
}
console.log(`| all threads | ${fmt(allLoaded)} | ${fmt(allIdle)} | ${fmt((allLoaded - allIdle) / events)} |`);
// Start-up work (loading the compiled plugin, say) lands on whichever thread
// is free, so an idle run's share can move between roles from one run to
// the next by a few thousand per event; the whole is steadier.
console.log("\n(the idle run's start-up work can fall on other threads than the loaded run's: compare builds by 'all threads')");
EOF
