#!/bin/sh
# Build the plugin: sh build.sh [outdir]   (needs `pip install componentize-py==0.25.1`)
# The source is copied to a temp dir first: componentize-py generates its
# bindings in its own temp dir, but would leave __pycache__ next to app.py.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
wit="$here/../../../wit"
out=${1:-/tmp/pyplug}
mkdir -p "$out"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp "$here/app.py" "$src/"
componentize-py -d "$wit" -w strategy-plugin componentize -p "$src" app -o "$out/reverse_print.wasm"
# Same bytes; the variant is picked by plugin-config ({"print": true} or not).
cp "$out/reverse_print.wasm" "$out/reverse_quiet.wasm"
