#!/usr/bin/env bash
# The benchmarks of steved, in one run, against baselines measured in the same run.
#   npm run bench                      everything (about 4-5 minutes on 2 CPUs); writes
#                                      bench/results/*.json, *.png, summary.md and the generated
#                                      block of README.md's "Benchmarks" section
#   npm run bench -- --quick           smaller and fewer runs, into bench/results/quick/ (not
#                                      committed, README untouched): for iterating
#   npm run bench -- [--quick] SECTION...   only some of: transport scheduling reclaim scale report,
#                                      into bench/results/partial/ (or quick/), README untouched;
#                                      sections not run keep what partial/ has, else the
#                                      committed results
#   npm run bench -- ninja             only when named: released ninja via jobclient fifo, per K
#   npm run bench -- [--quick] realbuilds  only when named: 4 real C++ builds at once (LevelDB),
#                                      -jN / -jN -lN / FIFO / steved / steved + memory pressure,
#                                      with and without a memory-limited cgroup v1 (20-60 min; 1
#                                      repetition instead of 3 with --quick)
# Only a full run without --quick writes the tracked bench/results/ and README.md, and only
# once every section has finished (it measures into partial/ first).
# Does all set-up first (scripts/setup.sh), builds the C parts with gcc and pkg-config fuse3.
# Needs root and /dev/fuse (steved and our C server mount FUSE files). Every server it starts
# is stopped and unmounted on exit, also on failure or Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=
SECTIONS=()
for a in "$@"; do
  case "$a" in
    --quick) QUICK=--quick ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    transport|scheduling|reclaim|scale|report|ninja|realbuilds) SECTIONS+=("$a") ;;
    *) echo "bench: unknown argument '$a' (see bash bench/run.sh --help)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
  echo "bench: needs root and /dev/fuse (steved and the C baseline server mount FUSE files)" >&2
  exit 1
fi

bash scripts/setup.sh

# --- the C parts: the baseline server, the round-trip and hand-off clients, the job ---------
B=bench/build
mkdir -p "$B"
CFLAGS=(-O2 -Wall -Wextra -Werror)
for p in rtbench handoff job samefd; do
  if [ ! -x "$B/$p" ] || [ "bench/c/$p.c" -nt "$B/$p" ]; then gcc "${CFLAGS[@]}" -pthread -o "$B/$p" "bench/c/$p.c"; fi
done
if [ ! -x "$B/tokensrv" ] || [ bench/c/tokensrv.c -nt "$B/tokensrv" ]; then
  # shellcheck disable=SC2046
  gcc "${CFLAGS[@]}" -o "$B/tokensrv" bench/c/tokensrv.c $(pkg-config --cflags --libs fuse3)
fi

# Measurements go to quick/ or partial/, never straight into the committed bench/results/: an
# interrupted or partial run must not leave those half old, half new, nor touch README.md.
PUBLISH=
if [ -n "$QUICK" ]; then
  OUT=bench/results/quick
elif [ ${#SECTIONS[@]} -gt 0 ]; then
  # Its report still has every section: those not run come from earlier partial runs, else
  # from the last full run.
  OUT=bench/results/partial
  mkdir -p "$OUT"
  cp -n bench/results/*.json "$OUT"/
else
  OUT=bench/results/partial
  rm -rf "$OUT"
  PUBLISH=1
fi
W=$(mktemp -d /tmp/steved-bench.XXXXXX)

PY=
cleanup() {
  # First the driver (it stops what it started), then servers it registered in $W/pids that
  # are still ours (their command line names our work directory), then detach anything
  # still mounted under $W.
  local pids=() f pid
  if [ -n "$PY" ] && kill -0 "$PY" 2>/dev/null; then
    kill -TERM "$PY" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PY" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PY" 2>/dev/null || true
  fi
  for f in "$W"/pids/*; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$W"; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | while read -r m; do umount -l "$m" || true; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "[bench] work directory $W, results in $OUT; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
# In the background and waited for, so that a signal to this script runs the trap at once.
.venv/bin/python bench/py/main.py --work "$W" --out "$OUT" $QUICK "${SECTIONS[@]}" &
PY=$!
wait "$PY" || { rc=$?; PY=; echo "[bench] failed (exit $rc)" >&2; exit "$rc"; }
PY=
if [ -n "$PUBLISH" ]; then
  # Every section finished: these become the committed results; draw them there and
  # rewrite README.md's generated block.
  cp "$OUT"/*.json bench/results/
  rm -rf "$OUT"
  OUT=bench/results
  .venv/bin/python bench/py/main.py --work "$W" --out "$OUT" --update-readme report &
  PY=$!
  wait "$PY" || { rc=$?; PY=; echo "[bench] failed (exit $rc)" >&2; exit "$rc"; }
  PY=
fi
echo "[bench] done in $(( $(date +%s) - start )) s: $OUT/summary.md, $OUT/*.png"
