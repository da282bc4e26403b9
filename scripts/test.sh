#!/usr/bin/env bash
# Run every test of the project, after doing all set-up (scripts/setup.sh).
#   bash scripts/test.sh            all suites
#   bash scripts/test.sh FILE...    only these tap test files
# Suites: every *.test.ts under packages/*/test and test/ (tap), then every executable
# packages/*/test/run-suite.sh and test/*/run-suite.sh, each of which ends its output with
# "N passed, N failed". The last line of this script is the sum of them all.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh || { echo "set-up failed"; echo "0 passed, 1 failed"; exit 1; }

# Tests that mount FUSE file systems need root and /dev/fuse; say so up front, and fail
# (never skip) when they are missing under CI.
if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
  echo "WARNING: FUSE tests need root and /dev/fuse (uid=$(id -u), /dev/fuse $( [ -c /dev/fuse ] && echo present || echo missing)); they will fail" >&2
fi
export STEVED_ROOT=$ROOT
# The TypeScript loader of tap transpiles test files with this config (ES2022, CommonJS).
export TS_NODE_PROJECT=$ROOT/tsconfig.test.json
export STEVED_MAKE44=$ROOT/.venv/bin/make
export PATH=$PATH:$HOME/.cargo/bin

passed=0; failed=0; rc=0
# Logs of this run (a separate directory per run, so concurrent runs do not mix their counts).
mkdir -p test-results
LOGS=$(mktemp -d "$ROOT/test-results/run.XXXXXX")
if [ $# -gt 0 ]; then files=("$@"); else
  mapfile -t files < <(find packages/*/test test -name '*.test.ts' -not -path '*/node_modules/*' 2>/dev/null | sort)
fi
if [ ${#files[@]} -gt 0 ]; then
  node_modules/.bin/tap --reporter=tap "${files[@]}" 2>&1 | tee "$LOGS/tap.log"
  tap_rc=${PIPESTATUS[0]}
  summary=$(grep -aE '^# \{ total: ' "$LOGS/tap.log" | tail -1)
  p=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary"); f=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ "$tap_rc" != 0 ]; then rc=1; [ "${f:-0}" = 0 ] && failed=$((failed + 1)); fi
fi

if [ $# -eq 0 ]; then
  for suite in packages/*/test/run-suite.sh test/*/run-suite.sh; do
    [ -x "$suite" ] || continue
    echo "=== suite $suite"
    bash "$suite" 2>&1 | tee "$LOGS/suite.log"
    s_rc=${PIPESTATUS[0]}
    line=$(grep -aE '^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed' "$LOGS/suite.log" | tail -1)
    p=$(sed -nE 's/.*\b([0-9]+) passed.*/\1/p' <<<"$line"); f=$(sed -nE 's/.*\b([0-9]+) failed.*/\1/p' <<<"$line")
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
    if [ "$s_rc" != 0 ] || [ -z "$line" ]; then rc=1; [ "${f:-0}" = 0 ] && failed=$((failed + 1)); fi
  done
fi

[ "$failed" -gt 0 ] && rc=1
echo "$passed passed, $failed failed"
exit $rc
