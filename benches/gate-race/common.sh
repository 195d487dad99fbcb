# What run.sh, count.sh and kernel.sh share, sourced by each after they set
# HERE, ROOT and OUT and define fail: where converge and its plugin are, the
# ports, the sink, and converge's config for one run.

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
CONVERGE="${CONVERGE:-$TARGET/release/converge}"
WEBHOOK_OUT="${WEBHOOK_OUT:-$TARGET/wasm32-wasip2/wasm/webhook_out.wasm}"
SINK_PORT=18901
CONVERGE_PORT=18420

# Fails unless converge and its plugin are built.
require_converge() {
    [ -x "$CONVERGE" ] || fail "$CONVERGE not found: cargo build --release -p converge"
    [ -f "$WEBHOOK_OUT" ] || fail "$WEBHOOK_OUT not found: cargo build --profile wasm --target wasm32-wasip2 -p webhook-out"
}

# Fails unless converge-load is built (CONVERGE_LOAD overrides where it is
# looked for); sets LOAD.
require_load() {
    LOAD="${CONVERGE_LOAD:-$TARGET/release/converge-load}"
    [ -x "$LOAD" ] || fail "$LOAD not found: cargo build --release -p converge-load"
}

# Fails unless each port given is free on 127.0.0.1.
require_free_ports() {
    local port
    for port in "$@"; do
        if curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/"; then fail "127.0.0.1:$port is taken"; fi
    done
}

# Creates $OUT, failing if it holds files: a run's databases would answer a
# second run's events as duplicates (202 and no decision), and its counts
# and logs would mix with the new ones.
make_out() {
    mkdir -p "$OUT"
    [ -z "$(ls -A "$OUT")" ] || fail "$OUT holds an earlier run: give OUT a new or empty directory"
}

# Every process started is stopped when the script ends, however it ends.
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# Starts the sink, its log in $OUT/sink.log; sets SINK_PID.
start_sink() {
    node "$HERE/sink.js" "$SINK_PORT" > "$OUT/sink.log" 2>&1 &
    SINK_PID=$!
    pids+=("$SINK_PID")
    for _ in $(seq 1 50); do curl -s -o /dev/null -m 1 "http://127.0.0.1:$SINK_PORT/stats" && break; sleep 0.1; done
}

# converge's config for a run in directory $1: the race's, with its data
# directory and plugin made absolute, and compiled plugins kept between runs
# in $OUT/plugin-cache, as a deployed daemon keeps them.
converge_config() {
    local run="$1"
    mkdir -p "$run/data"
    cp "$HERE/converge/gate.rhai" "$run/"
    sed -e "s|^data_dir = .*|data_dir = \"$run/data\"|" \
        -e "s|^component = .*|component = \"$WEBHOOK_OUT\"|" \
        "$HERE/converge/converge.toml" > "$run/converge.toml"
    sed -i "/^\[storage\]/a plugin_cache_dir = \"$OUT/plugin-cache\"" "$run/converge.toml"
}
