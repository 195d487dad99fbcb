#!/usr/bin/env bash
# Instructions per gate event, by thread: converge on the race's config under
# callgrind, EVENTS of the race's events (default 3000) sent once each by wrk
# with once.lua, every decision waited for at the sink, then SIGTERM. Counts
# do not move with the machine as times do (docs/performance.md, "Counted
# rather than timed"), so two builds can be compared by one run each.
#
#   bash benches/gate-race/count.sh [EVENTS]
#
# Needs valgrind, node and wrk, and converge built as for run.sh (CONVERGE and
# WEBHOOK_OUT override where they are looked for). Under valgrind the daemon
# runs about fifty times slower: a few minutes for 3,000 events. The daemon
# is started three times: to compile the plugin into the cache, idle (what
# starting and stopping cost), and under load; the idle run's count is taken
# off the loaded one's, thread by thread. The daemon logs at its default
# level unless RUST_LOG says otherwise. Everything listens on 127.0.0.1.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
EVENTS="${1:-3000}"
OUT="${OUT:-$(mktemp -d /tmp/gate-count.XXXXXX)}"

fail() { echo "count.sh: $*" >&2; exit 1; }
# shellcheck source=common.sh
. "$HERE/common.sh"
command -v valgrind >/dev/null || fail "valgrind is not installed (apt-get install valgrind)"
command -v callgrind_annotate >/dev/null || fail "callgrind_annotate is not installed (it comes with valgrind)"
command -v node >/dev/null || fail "node is not installed"
command -v wrk >/dev/null || fail "wrk is not installed: bash $HERE/install.sh"
require_converge
require_free_ports $SINK_PORT $CONVERGE_PORT
mkdir -p "$OUT"
echo "count: $EVENTS events under callgrind; files in $OUT"

start_sink

node "$HERE/events.js" "$EVENTS" "$OUT/events.jsonl" "count-$(date +%s)" > /dev/null
node "$HERE/ce.js" "$OUT/events.jsonl" "$OUT/events.ce.jsonl" "/race/count" > /dev/null

# The race's config, with one change: at most 6 plugin calls at once. Under
# valgrind wasmtime can reserve the memory of a few instances only (neither
# the pool nor 64 instances of 4 GiB fit); with more, calls fail and are
# retried, and the counts hold the retries.
config() {
    converge_config "$1"
    sed -i "s|^concurrency = .*|concurrency = 6|" "$1/converge.toml"
}

# Starts the daemon under callgrind, runs "$2" (a command, or `true`), stops it.
counted() {
    local run="$1" load="$2"
    config "$run"
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
    if grep -q "action failed" "$run/converge.log"; then
        fail "actions failed under valgrind (see $run/converge.log): the counts would hold their retries"
    fi
}

send() {
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

# Each thread's instructions, by what it runs: "<role> <instructions>".
roles() {
    local file role
    for file in "$1"/callgrind.*-*; do
        role=other
        if grep -q "tokio::runtime::scheduler::multi_thread::worker::run" "$file"; then role=tokio
        elif grep -q "converge::processor::Processor::run" "$file"; then role=processor
        elif grep -q "converge::journal::Writer::" "$file"; then role=writer
        elif grep -q "converge_store::sqlite::checkpoint::checkpoint" "$file"; then role=checkpointer
        fi
        echo "$role $(awk '/^summary:/ {print $2}' "$file")"
    done
}

counted "$OUT/compile" true
counted "$OUT/idle" true
counted "$OUT/loaded" send

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
