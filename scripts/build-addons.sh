#!/usr/bin/env bash
# Compile the native addons (packages/*/binding.gyp) with node-gyp, offline: the Node.js headers
# come from --nodedir (the system's, /usr/include/node) instead of a download. For trees that
# already have their JavaScript compiled (release tarballs); a checkout uses scripts/build.sh.
#
#   scripts/build-addons.sh [--nodedir DIR] [--node-gyp PATH] [PACKAGE_DIR...]
#
# --nodedir   prefix holding include/node (default: the prefix of the `node` on PATH)
# --node-gyp  node-gyp's bin/node-gyp.js or a node-gyp command (default: $NODE_GYP, else
#             node_modules/.bin/node-gyp, else the copy bundled with npm)
# PACKAGE_DIR packages to build (default: every packages/*/ with a binding.gyp)
# CC, CXX, CFLAGS, CXXFLAGS and LDFLAGS from the environment are honoured by node-gyp's make.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
die() { printf 'build-addons: %s\n' "$*" >&2; exit 1; }

nodedir="" gyp=${NODE_GYP:-}
dirs=()
while [ $# -gt 0 ]; do
  case $1 in
    --nodedir=*) nodedir=${1#*=} ;;
    --nodedir) nodedir=${2:?--nodedir needs a directory}; shift ;;
    --node-gyp=*) gyp=${1#*=} ;;
    --node-gyp) gyp=${2:?--node-gyp needs a path}; shift ;;
    -h|--help) sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) dirs+=("${1%/}") ;;
  esac
  shift
done

command -v node >/dev/null || die "node is not on PATH"
if [ -z "$nodedir" ]; then
  nodedir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
fi
[ -f "$nodedir/include/node/node_api.h" ] ||
  die "no Node.js headers in $nodedir/include/node (install them, or pass --nodedir)"

if [ -z "$gyp" ]; then
  if [ -x node_modules/.bin/node-gyp ]; then
    gyp=$ROOT/node_modules/.bin/node-gyp
  elif command -v npm >/dev/null; then
    # npm bundles node-gyp: <prefix>/lib/node_modules/npm/bin/npm-cli.js -> ../node_modules/node-gyp
    npm_root=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
    [ -f "$npm_root/node_modules/node-gyp/bin/node-gyp.js" ] && gyp=$npm_root/node_modules/node-gyp/bin/node-gyp.js
  fi
  [ -n "$gyp" ] || die "node-gyp not found: pass --node-gyp or set NODE_GYP"
fi
gyp_cmd=("$gyp")
case $gyp in *.js) gyp_cmd=(node "$gyp") ;; esac

if [ ${#dirs[@]} -eq 0 ]; then
  for f in packages/*/binding.gyp; do [ -f "$f" ] && dirs+=("$(dirname "$f")"); done
fi
[ ${#dirs[@]} -gt 0 ] || die "no packages/*/binding.gyp here"
for d in "${dirs[@]}"; do
  [ -f "$d/binding.gyp" ] || die "$d has no binding.gyp"
  echo "[build-addons] $d (node-gyp, headers from $nodedir)" >&2
  (cd "$d" && "${gyp_cmd[@]}" rebuild --nodedir="$nodedir" --loglevel=warn) >&2 ||
    die "node-gyp failed in $d"
  ls "$d"/build/Release/*.node >/dev/null 2>&1 || die "node-gyp left no build/Release/*.node in $d"
done
