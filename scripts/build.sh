#!/usr/bin/env bash
# Build every package: native addons (node-gyp against Debian's libfuse3), then TypeScript.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# node-gyp must find the headers of the Node.js it builds for without a download.
GYP_ARGS=(--loglevel=warn)
NODE_PREFIX=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
if [ -f "$NODE_PREFIX/include/node/node_api.h" ]; then GYP_ARGS+=(--nodedir="$NODE_PREFIX"); fi
for pkg in packages/*/; do
  if [ -f "$pkg/binding.gyp" ]; then
    # Rebuild only when a native source is newer than the built addon.
    out=$(ls "$pkg"/build/Release/*.node 2>/dev/null | head -1 || true)
    if [ -z "$out" ] || [ -n "$(find "$pkg/native" "$pkg/binding.gyp" -newer "$out" 2>/dev/null | head -1)" ]; then
      echo "[build] native addon in $pkg" >&2
      (cd "$pkg" && "$ROOT/node_modules/.bin/node-gyp" rebuild "${GYP_ARGS[@]}" >/dev/null)
    fi
  fi
done
"$ROOT/node_modules/.bin/tsc" -b
