#!/usr/bin/env bash
# Builds js-notify.wasm (or the path given) from app.js with componentize-js,
# against the WIT in plugins/wit. Needs `npm ci` in this directory first.
#
# The host gives plugins WASI p2 without sockets and without wasi:http
# (HTTP goes through converge's own `http` import), so the runtime's `fetch`
# support is left out: `-d http -d fetch-event`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/js-notify.wasm}")"
cd "$here"
node_modules/.bin/componentize-js app.js --wit ../../wit --world-name action-plugin \
    --disable http fetch-event --out "$out"
