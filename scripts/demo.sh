#!/usr/bin/env bash
# Live demo: start steved, run real builds that share its pool, and show its status.
#   bash scripts/demo.sh [TOKENS]      (default 4)
# Does all set-up first (scripts/setup.sh). Needs root and /dev/fuse (FUSE-file transport).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
JOBS=${1:-4}
MAKE44=$ROOT/.venv/bin/make
export PATH=$PATH:$HOME/.cargo/bin
W=$(mktemp -d /tmp/steved-demo.XXXXXX)
JS=$W/jobserver
STEVED_PID=
cleanup() {
  [ -n "$STEVED_PID" ] && kill -TERM "$STEVED_PID" 2>/dev/null && wait "$STEVED_PID" 2>/dev/null || true
  grep -q " $JS " /proc/self/mountinfo && umount -l "$JS" || true
  rm -rf "$W"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting steved with $JOBS tokens on a FUSE file"
node packages/steved/bin/steved.js --transport fuse --path "$JS" -j "$JOBS" -v > "$W/steved.out" 2> "$W/steved.err" &
STEVED_PID=$!
for _ in $(seq 200); do grep -q '^MAKEFLAGS=' "$W/steved.out" && break; sleep 0.05; done
cat "$W/steved.out"
export MAKEFLAGS=$(sed -n 's/^MAKEFLAGS=//p' "$W/steved.out")
report() { kill -USR1 "$STEVED_PID"; sleep 0.2; awk '/^steved status at/{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$W/steved.err" | sed -n '/^steved status at/,/^since start/p'; }

# Two make builds of 12 sleep jobs each (they log start/end so we can count concurrency),
# and a cargo build of a small workspace, all at once, all with MAKEFLAGS from steved.
for b in A B; do
  { echo "all: $(seq -f "$b%g" -s ' ' 1 12)"; echo "$(seq -f "$b%g" -s ' ' 1 12):"
    printf '\t@echo "start $@ $$(date +%%s%%N)" >> %s; sleep 0.8; echo "end $@ $$(date +%%s%%N)" >> %s\n' "$W/jobs.log" "$W/jobs.log"; } > "$W/$b.mk"
done
mkdir -p "$W/ws"
printf '[workspace]\nresolver = "2"\nmembers = [%s]\n' "$(seq -f '"c%g"' -s ', ' 1 6)" > "$W/ws/Cargo.toml"
for i in $(seq 1 6); do
  mkdir -p "$W/ws/c$i/src"
  printf '[package]\nname = "c%s"\nversion = "0.1.0"\nedition = "2021"\n' "$i" > "$W/ws/c$i/Cargo.toml"
  for k in $(seq 1 400); do echo "pub fn f$k<T: std::fmt::Debug + Clone>(t: T) -> String { format!(\"{:?}$k\", t.clone()) }"; done > "$W/ws/c$i/src/lib.rs"
done

say "running: make A, make B (12 jobs each, GNU make $("$MAKE44" --version | head -1 | awk '{print $3}')) and cargo build (6 crates), sharing $JOBS tokens"
"$MAKE44" -f "$W/A.mk" > "$W/A.out" 2>&1 & A=$!
"$MAKE44" -f "$W/B.mk" > "$W/B.out" 2>&1 & B=$!
(cd "$W/ws" && CARGO_TARGET_DIR=$W/target cargo build --offline --quiet) > "$W/cargo.out" 2>&1 & C=$!
sleep 1
say "steved status while the builds run (SIGUSR1)"
report
rc=0
wait $A || rc=1; wait $B || rc=1; wait $C || rc=1
[ $rc = 0 ] || { echo "a build failed:"; cat "$W"/*.out; exit 1; }

say "what the builds recorded"
node scripts/joblog-summary.js "$W/jobs.log" "$JOBS" 2
say "steved status after the builds: every token is back"
report
