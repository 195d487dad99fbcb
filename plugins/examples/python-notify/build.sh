#!/usr/bin/env bash
# Builds python-notify.wasm (or the path given) from app.py with
# componentize-py, against the WIT in plugins/wit. Needs componentize-py on
# PATH: `pip install -r requirements.txt`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/python-notify.wasm}")"
cd "$here"
componentize-py --wit-path ../../wit --world action-plugin componentize app --output "$out"
