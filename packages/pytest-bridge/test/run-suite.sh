#!/usr/bin/env bash
# The pytest-bridge suite: the `-p jobserver` plugin with real pytest + pytest-xdist from the
# project venv, a real steved on FUSE files and real `jobclient agent` processes.
# test_wheel.py also builds the plugin's wheel, installs it into a fresh venv with pytest and
# pytest-xdist from PyPI, and runs more-itertools' sdist suite under it: it needs PyPI.
# Needs root and /dev/fuse (fails, never skips, without them), and scripts/setup.sh done.
# Last line: "N passed, N failed" (scripts/test.sh adds it up); exit status non-zero on failure.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PKG=$(dirname "$HERE")
ROOT=${STEVED_ROOT:-$(cd "$PKG/../.." && pwd)}
PY=$ROOT/.venv/bin/python

fail() { echo "pytest-bridge: $*"; echo "0 passed, 1 failed"; exit 1; }
[ -x "$PY" ] || fail "no $PY: run scripts/setup.sh first"
"$PY" -c 'import pytest_steved_jobserver.plugin, xdist' 2>/dev/null ||
  fail "the plugin or pytest-xdist is not installed in .venv: run scripts/setup.sh"

WORK=$(mktemp -d /tmp/pytest-bridge.XXXXXX)
cleanup() {
  # The tests unmount what they mount; this is the last line of defence before rm -rf.
  awk -v w="$WORK/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | while read -r m; do
    echo "pytest-bridge: unmounting leftover $m" >&2
    umount -l "$m" || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export STEVED_ROOT=$ROOT
export PYTEST_BRIDGE_NUMBERS=$WORK/numbers.txt
cd "$PKG"
# The outer run loads neither this plugin nor xdist: only the inner runs it starts do.
"$PY" -m pytest -p no:cacheprovider -p no:jobserver -p no:xdist -v \
  --basetemp="$WORK/tmp" --junitxml="$WORK/junit.xml" test
rc=$?

if [ -s "$PYTEST_BRIDGE_NUMBERS" ]; then
  echo "--- pytest-bridge: what the runs measured"
  cat "$PYTEST_BRIDGE_NUMBERS"
fi
read -r passed failed < <("$PY" - "$WORK/junit.xml" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 1)
    raise SystemExit
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
n = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get(k, 0)) for s in suites for k in ("failures", "errors", "skipped"))
print(n - bad, bad)
PYEOF
)
if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi
echo "$passed passed, $failed failed"
[ "$rc" = 0 ] && [ "$failed" = 0 ]
