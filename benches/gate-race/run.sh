#!/usr/bin/env bash
# The gate race: Node-RED and converge on the same workload, alternately,
# driven by the same load tool (wrk with once.lua), each decision counted by
# the same sink (sink.js); prints each run and the medians' ratios.
#
#   bash benches/gate-race/run.sh [EVENTS [RUNS]]     (default 40000 events, 3 runs each)
#
# Needs node, wrk and Node-RED under $PEERS_DIR (install.sh), and converge
# built in release with the webhook-out plugin:
#   cargo build --release -p converge
#   cargo build --profile wasm --target wasm32-wasip2 -p webhook-out
# CONVERGE (the binary) and WEBHOOK_OUT (the .wasm) override where they are
# looked for (default: $CARGO_TARGET_DIR, else target/, of this checkout).
# Results go to $OUT (default: a new directory under /tmp), one JSON line per
# run in runs.jsonl. Everything listens on 127.0.0.1; every run is bounded.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
EVENTS="${1:-40000}"
RUNS="${2:-3}"
CONCURRENCY=32
PEERS_DIR="${PEERS_DIR:-/tmp/converge-peers}"
export PEERS_DIR
OUT="${OUT:-$(mktemp -d /tmp/gate-race.XXXXXX)}"
NR_PORT=18880
# The longest one run's sending may take, and its decisions' arriving after.
SEND_LIMIT=300
DRAIN_LIMIT=120

fail() { echo "run.sh: $*" >&2; exit 1; }
# shellcheck source=common.sh
. "$HERE/common.sh"
command -v node >/dev/null || fail "node is not installed"
command -v wrk >/dev/null || fail "wrk is not installed: bash $HERE/install.sh"
[ -f "$PEERS_DIR/node-red/node_modules/node-red/red.js" ] || fail "Node-RED is not under $PEERS_DIR: bash $HERE/install.sh"
require_converge
require_free_ports $SINK_PORT $NR_PORT $CONVERGE_PORT
make_out
echo "gate race: $EVENTS events, $RUNS runs each, concurrency $CONCURRENCY; results in $OUT"

start_sink

# CPU time (utime + stime, fields 14 and 15 of /proc/PID/stat) in ms.
cpu_ms() {
    local ticks
    ticks=$(sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}')
    echo $((ticks * 1000 / $(getconf CLK_TCK)))
}
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# The machine's CPU ticks, "busy total" (all cores; idle and iowait are not busy).
machine_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
# `times`'s children line ("0m1.234s 0m0.567s") in ms.
times_ms() { awk '{t = 0; for (i = 1; i <= 2; i++) {split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60000 + a[2] * 1000}; printf "%d\n", t}'; }
now_ms() { date +%s%3N; }

start_nodered() {
    NR_PORT=$NR_PORT bash "$HERE/node-red/start.sh" > "$1/start.log" 2>&1 || { cat "$1/start.log"; fail "Node-RED did not start"; }
    cat "$PEERS_DIR/node-red/node-red.pid"
}

start_converge() {
    local run="$1"
    converge_config "$run"
    nohup "$CONVERGE" run --config "$run/converge.toml" > "$run/converge.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null -m 1 "http://127.0.0.1:$CONVERGE_PORT/healthz" && { echo "$pid"; return; }
        sleep 0.1
    done
    cat "$run/converge.log" >&2
    fail "converge did not start"
}

one_run() {
    local system="$1" i="$2"
    local prefix="$system$i-$(date +%s)"
    local run="$OUT/$system-$i"
    mkdir -p "$run"
    local expected file ct url
    expected=$(node "$HERE/events.js" "$EVENTS" "$run/events.jsonl" "$prefix")
    if [ "$system" = converge ]; then
        node "$HERE/ce.js" "$run/events.jsonl" "$run/events.ce.jsonl" "/race/$prefix" > /dev/null
        file="$run/events.ce.jsonl"
        ct="application/cloudevents+json"
        url="http://127.0.0.1:$CONVERGE_PORT/hooks/gate"
    else
        file="$run/events.jsonl"
        ct="application/json"
        url="http://127.0.0.1:$NR_PORT/events"
    fi
    local load
    load="$(uptime)"
    local pid
    if [ "$system" = converge ]; then pid=$(start_converge "$run"); else pid=$(start_nodered "$run"); fi
    pids+=("$pid")
    curl -s -m 5 -X POST "http://127.0.0.1:$SINK_PORT/reset" > /dev/null
    local cpu0 t0 sink0 machine0
    cpu0=$(cpu_ms "$pid")
    sink0=$(cpu_ms "$SINK_PID")
    machine0=$(machine_ticks)
    t0=$(now_ms)
    # In a subshell, whose `times` then holds wrk's CPU: the load tool's share.
    (
        EVENTS="$file" CT="$ct" timeout $((SEND_LIMIT + 30)) \
            wrk -t1 -c$CONCURRENCY -d${SEND_LIMIT}s -s "$HERE/once.lua" "$url" > "$run/wrk.txt" 2>&1 || true
        times | tail -n 1 | times_ms > "$run/wrk.cpu"
    )
    local stats total=0
    for _ in $(seq 1 $((DRAIN_LIMIT * 10))); do
        stats=$(curl -s -m 5 "http://127.0.0.1:$SINK_PORT/stats")
        total=$(node -e 'console.log(JSON.parse(process.argv[1]).total)' "$stats")
        [ "$total" -ge "$EVENTS" ] && break
        sleep 0.1
    done
    local cpu1 rss harness machine
    cpu1=$(cpu_ms "$pid")
    harness=$(($(cat "$run/wrk.cpu") + $(cpu_ms "$SINK_PID") - sink0))
    machine="$machine0 $(machine_ticks)"
    rss=$(peak_rss_kib "$pid")
    # converge's own account of its journal commits: a latency tail that
    # slow commits (fsyncs) explain, or one they do not.
    : > "$run/metrics.txt"
    if [ "$system" = converge ]; then
        curl -s -m 5 "http://127.0.0.1:$CONVERGE_PORT/metrics" > "$run/metrics.txt" || true
    fi
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    local result
    result=$(grep '^RESULT ' "$run/wrk.txt" | sed 's/^RESULT //' || true)
    [ -n "$result" ] || { cat "$run/wrk.txt"; fail "$system run $i: wrk printed no RESULT"; }
    node - "$system" "$i" "$EVENTS" "$t0" "$((cpu1 - cpu0))" "$rss" "$load" "$expected" "$result" "$stats" \
        "$run/metrics.txt" "$harness" "$machine" "$(nproc)" >> "$OUT/runs.jsonl" <<'JS'
const [system, run, events, t0, cpu_ms, rss_kib, uptime, expected, wrk, sink, metrics, harness_ms, machine, cores] = process.argv.slice(2);
// The machine's busy share from the first request to the last decision.
const [busy0, total0, busy1, total1] = machine.split(/\s+/).map(Number);
const e = JSON.parse(expected).expected, w = JSON.parse(wrk), s = JSON.parse(sink);
// converge_commit_duration_seconds: how many commits took over 25.6 ms, and
// the bucket bound the longest stayed under (null for Node-RED).
const buckets = [...require("fs").readFileSync(metrics, "utf8")
  .matchAll(/^converge_commit_duration_seconds_bucket\{le="([^"]+)"\} (\d+)/gm)]
  .map(m => [m[1] === "+Inf" ? Infinity : +m[1], +m[2]]);
const total = buckets.length ? buckets[buckets.length - 1][1] : null;
const under = (bound) => (buckets.find(([le]) => le === bound) || [, null])[1];
const longest = buckets.find(([, n]) => n === total);
const commits = total === null || under(0.0256) === null ? null : {
  count: total,
  over_25_6_ms: total - under(0.0256),
  // null when the longest is past the last finite bound
  longest_under_ms: longest[0] === Infinity ? null : longest[0] * 1000,
};
const counts_ok = s.total === +events && s.bad === 0 &&
  Object.keys(e).every(k => (s.by[k] || 0) === e[k]) && Object.keys(s.by).every(k => k in e);
console.log(JSON.stringify({
  system, run: +run, events: +events, uptime: uptime.trim(),
  rps: w.rps, p50_ms: w.p50_ms, p99_ms: w.p99_ms, status: w.status, errors: w.errors,
  all_decisions_s: s.last_ms === null ? null : (s.last_ms - +t0) / 1000,
  cpu_ms_per_event: +cpu_ms / +events, peak_rss_mib: +rss_kib / 1024,
  // wrk and the sink: what the race itself costs on the same cores.
  harness_cpu_ms_per_event: +harness_ms / +events,
  machine_busy: (busy1 - busy0) / (total1 - total0), cores: +cores,
  decision_bytes: s.total ? s.bytes / s.total : null,
  counts_ok, expected: e, sink: s.by, commits,
}));
JS
    tail -n 1 "$OUT/runs.jsonl"
}

for i in $(seq 1 "$RUNS"); do
    one_run node-red "$i"
    one_run converge "$i"
done

node "$HERE/report.js" "$OUT/runs.jsonl"
