#!/usr/bin/env bash
# CUSE mode of steved, tested for real: a throw-away QEMU VM running Debian's cloud kernel
# (CONFIG_CUSE=m), with the machine's own Node.js, the built steved and the test clients in a
# busybox initramfs. One boot per run; each test reports a marker line on the serial console,
# and this script prints every result and ends with "N passed, N failed".
#
#   bash test/vm/run-suite.sh
#
# Environment (all optional):
#   STEVED_ROOT        the checkout (default: two levels up from here)
#   STEVED_VM_CACHE    kernel, build and image cache (default: $STEVED_ROOT/.cache/vm, git-ignored)
#   STEVED_MAKE44      GNU make >= 4.4 to put in the image (default: $STEVED_ROOT/.venv/bin/make)
#   STEVED_VM_ACCEL    auto (default), tcg or kvm. auto uses KVM only where /dev/kvm is writable
#                      and kvm_intel or kvm_amd is loaded (PVM hosts hang on stock kernels)
#   STEVED_VM_TIMEOUT  seconds before the VM is killed (default 240); STEVED_VM_SMP (2), STEVED_VM_MEM (1024)
#
# Needs root for apt-get (qemu-system-x86, busybox-static, cpio, gcc) when they are missing.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${STEVED_ROOT:-$(cd "$HERE/../.." && pwd)}
CACHE=${STEVED_VM_CACHE:-$ROOT/.cache/vm}
MAKE44=${STEVED_MAKE44:-$ROOT/.venv/bin/make}
ACCEL=${STEVED_VM_ACCEL:-auto}
VM_TIMEOUT=${STEVED_VM_TIMEOUT:-240}
SMP=${STEVED_VM_SMP:-2}
MEM=${STEVED_VM_MEM:-1024}
T0=$(date +%s.%N)

elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[vm %6ss] %s\n' "$(elapsed)" "$*"; }
# A failure before the VM could run: one failed test, the closing line, exit 1.
setup_fail() {
  echo "not ok vm-setup: $*"
  echo "0 passed, 1 failed"
  exit 1
}

mkdir -p "$CACHE" || setup_fail "cannot create $CACHE"
exec 9>"$CACHE/.lock"
flock 9 || setup_fail "cannot lock $CACHE/.lock"

QPID=""
QEMU_PIDFILE=$CACHE/qemu.pid
# Stop the VM if this script is interrupted: timeout(1) passes SIGTERM on to qemu; qemu's own
# pid file catches the rest.
cleanup() {
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    kill "$QPID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done
    local q
    q=$(cat "$QEMU_PIDFILE" 2>/dev/null)
    [ -n "$q" ] && kill -9 "$q" 2>/dev/null
    kill -9 "$QPID" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# ---- 1. host packages ---------------------------------------------------------------------
apt_install() {
  [ "$(id -u)" = 0 ] || setup_fail "missing $* and not root (apt-get install $*)"
  log "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "$@" >"$CACHE/apt.log" 2>&1; then
    apt-get update -qq >>"$CACHE/apt.log" 2>&1
    apt-get install -y -qq --no-install-recommends "$@" >>"$CACHE/apt.log" 2>&1 ||
      setup_fail "apt-get install $* failed: $(tail -n 3 "$CACHE/apt.log" | tr '\n' ' ')"
  fi
}
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
# A static busybox: the dynamic one from the "busybox" package would need its libraries.
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
command -v dpkg-deb >/dev/null || setup_fail "dpkg-deb not found: this harness needs a Debian host"
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# ---- 2. the kernel: Debian's cloud kernel, extracted (not installed) ------------------------
resolve_kernel() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
KPKG=$(resolve_kernel)
if [ -z "$KPKG" ]; then
  apt-get update -qq >/dev/null 2>&1
  KPKG=$(resolve_kernel)
fi
if [ -z "$KPKG" ]; then
  # No package lists (offline?): fall back to the newest kernel already in the cache.
  KPKG=$(ls -1 "$CACHE/kernel" 2>/dev/null | sort -V | tail -n 1)
  [ -n "$KPKG" ] || setup_fail "cannot resolve linux-image-cloud-amd64 (apt-get update?) and no cached kernel"
  log "apt cannot resolve linux-image-cloud-amd64; using the cached $KPKG"
fi
KDIR=$CACHE/kernel/$KPKG
if [ ! -f "$KDIR/.complete" ]; then
  log "fetching $KPKG"
  tmp=$(mktemp -d "$CACHE/kernel-dl.XXXXXX")
  chmod 777 "$tmp"   # apt-get download drops to the _apt user
  if ! (cd "$tmp" && apt-get download -q "$KPKG" >"$tmp/download.log" 2>&1); then
    # Stale package lists name a kernel the archive no longer has: refresh once and retry.
    apt-get update -qq >/dev/null 2>&1
    new=$(resolve_kernel)
    if [ -n "$new" ] && [ "$new" != "$KPKG" ]; then KPKG=$new; KDIR=$CACHE/kernel/$KPKG; fi
    (cd "$tmp" && apt-get download -q "$KPKG" >"$tmp/download.log" 2>&1) ||
      { msg=$(tail -n 2 "$tmp/download.log" | tr '\n' ' '); rm -rf "$tmp"; setup_fail "apt-get download $KPKG failed: $msg"; }
  fi
  deb=$(ls "$tmp"/*.deb | head -n 1)
  mkdir -p "$tmp/x"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/x" --wildcards '*boot/vmlinuz-*' '*/kernel/fs/fuse/*' ||
    { rm -rf "$tmp"; setup_fail "extracting $deb failed"; }
  mkdir -p "$KDIR"
  cp "$(find "$tmp/x" -path '*boot/vmlinuz-*' | head -n 1)" "$KDIR/vmlinuz"
  for m in fuse cuse; do
    src=$(find "$tmp/x" -path "*/kernel/fs/fuse/$m.ko*" | head -n 1)
    case "$src" in
      *.ko) cp "$src" "$KDIR/$m.ko" ;;
      *.ko.xz) xz -dc "$src" >"$KDIR/$m.ko" ;;
      *.ko.zst) zstd -qdc "$src" >"$KDIR/$m.ko" ;;
      *) rm -rf "$tmp" "$KDIR"; setup_fail "$KPKG has no $m.ko (a kernel without CONFIG_CUSE=m?)" ;;
    esac
  done
  rm -rf "$tmp"
  touch "$KDIR/.complete"
fi
log "kernel $KPKG"

# ---- 3. the project, built -----------------------------------------------------------------
SD=$ROOT/packages/steved
for f in bin/steved.js dist/main.js build/Release/steved.node; do
  [ -e "$SD/$f" ] || setup_fail "packages/steved/$f is missing: build the project first (npm run build)"
done
NODE=$(readlink -f "$(command -v node)") || setup_fail "node not found"

# ---- 4. the test programs -------------------------------------------------------------------
BUILD=$CACHE/build
mkdir -p "$BUILD"
gcc -static -O2 -Wall -pthread -o "$BUILD/vmtest" "$HERE/vmtest.c" 2>"$BUILD/gcc.log" ||
  setup_fail "compiling vmtest.c failed: $(head -n 5 "$BUILD/gcc.log" | tr '\n' ' ')"

# ---- 5. the initramfs -----------------------------------------------------------------------
STAGE=$CACHE/root
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,usr/bin,etc,proc,sys,dev,tmp,root,modules,opt/vm,opt/steved} || setup_fail "cannot stage $STAGE"

# Copy a file to the same path in the image, following symlinks.
put() { mkdir -p "$STAGE$(dirname "$2")" && cp -L "$1" "$STAGE$2"; }
# The shared libraries ldd lists for a binary, at the paths ldd gives.
put_libs() {
  local lib
  for lib in $(ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    [ -e "$STAGE$lib" ] || put "$lib" "$lib" || setup_fail "cannot copy $lib (needed by $1)"
  done
}

cp /bin/busybox "$STAGE/bin/busybox"
for a in $(/bin/busybox --list); do
  [ "$a" = busybox ] || ln -s busybox "$STAGE/bin/$a"
done
put "$NODE" /usr/bin/node
put_libs "$NODE"
cp "$KDIR/fuse.ko" "$KDIR/cuse.ko" "$STAGE/modules/"
cp "$HERE/guest/init" "$STAGE/init" && chmod 755 "$STAGE/init"
cp "$HERE/guest/suite.sh" "$HERE/guest/jobs.mk" "$BUILD/vmtest" "$STAGE/opt/vm/"
cp "$HERE/guest/etc-passwd" "$STAGE/etc/passwd"
cp "$HERE/guest/etc-group" "$STAGE/etc/group"
printf 'passwd: files\ngroup: files\nshadow: files\n' >"$STAGE/etc/nsswitch.conf"
if [ -x "$MAKE44" ] && "$MAKE44" --version 2>/dev/null | head -n 1 | grep -Eq 'GNU Make 4\.([4-9]|[1-9][0-9])'; then
  put "$MAKE44" /usr/bin/make
  put_libs "$MAKE44"
else
  log "no GNU make >= 4.4 at $MAKE44: the gnu-make tests will fail"
fi

# The workspace packages (built output only) and the runtime node_modules they resolve to,
# at the same paths relative to the checkout, under /opt/steved.
PKGS=("$SD")
[ -d "$ROOT/packages/jobclient/dist" ] && PKGS+=("$ROOT/packages/jobclient")
for p in "${PKGS[@]}"; do
  rel=${p#"$ROOT"/}
  mkdir -p "$STAGE/opt/steved/$rel"
  cp "$p/package.json" "$STAGE/opt/steved/$rel/"
  for d in bin dist; do [ -d "$p/$d" ] && cp -a "$p/$d" "$STAGE/opt/steved/$rel/"; done
  if [ -d "$p/build/Release" ]; then
    mkdir -p "$STAGE/opt/steved/$rel/build/Release"
    for n in "$p"/build/Release/*.node; do
      [ -e "$n" ] || continue
      cp "$n" "$STAGE/opt/steved/$rel/build/Release/"
      put_libs "$n"
    done
  fi
done
deps=$(node - "$ROOT" "${PKGS[@]}" <<'EOF'
// The runtime dependency closure (dependencies + optionalDependencies), resolved the way Node
// resolves them: up the node_modules chain from each package's directory.
const fs = require('fs'), path = require('path')
const [root, ...pkgs] = process.argv.slice(2)
const seen = new Set(), out = []
function find(from, name) {
  for (let d = from; ; d = path.dirname(d)) {
    const c = path.join(d, 'node_modules', name)
    if (fs.existsSync(path.join(c, 'package.json'))) return c
    if (d === path.dirname(d)) return null
  }
}
function visit(dir) {
  const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  const opt = pj.optionalDependencies || {}
  for (const name of Object.keys({ ...(pj.dependencies || {}), ...opt })) {
    const where = find(dir, name)
    if (!where) { if (name in opt) continue; console.error(`cannot resolve ${name} from ${dir}`); process.exit(1) }
    if (seen.has(where)) continue
    seen.add(where)
    const real = fs.realpathSync(where)
    if (!real.startsWith(root + path.sep)) { console.error(`${name} resolves outside the checkout: ${real}`); process.exit(1) }
    out.push(path.relative(root, where) + (real !== where ? '\t' + path.relative(root, real) : ''))
    visit(real)
  }
}
for (const p of pkgs) visit(p)
console.log(out.join('\n'))
EOF
) || setup_fail "resolving the runtime node_modules failed"
while IFS=$'\t' read -r rel real; do
  [ -n "$rel" ] || continue
  mkdir -p "$STAGE/opt/steved/$(dirname "$rel")"
  if [ -n "$real" ] && [ -d "$STAGE/opt/steved/$real" ]; then
    # A workspace package linked into node_modules: link it the same way.
    ln -s "$(realpath --relative-to="$ROOT/$(dirname "$rel")" "$ROOT/$real")" "$STAGE/opt/steved/$rel"
  else
    cp -aL "$ROOT/$rel" "$STAGE/opt/steved/$rel"
  fi
done <<<"$deps"

INITRD=$CACHE/initrd.cpio
(cd "$STAGE" && find . -mindepth 1 | cpio -o -H newc -R 0:0 --quiet) >"$INITRD" || setup_fail "cpio failed"
rm -rf "$STAGE"   # rebuilt on every run; the image is all the VM needs
log "initramfs $(du -m "$INITRD" | cut -f1) MB (node $("$NODE" --version), $(echo "$deps" | grep -c .) node_modules)"

# ---- 6. boot ----------------------------------------------------------------------------------
case "$ACCEL" in
  auto)
    if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then ACCEL=kvm; else ACCEL=tcg; fi ;;
  kvm | tcg) ;;
  *) setup_fail "STEVED_VM_ACCEL must be auto, kvm or tcg (got $ACCEL)" ;;
esac
QARGS=(-accel "$ACCEL")
[ "$ACCEL" = kvm ] && QARGS+=(-cpu host)
CONSOLE=$CACHE/console.log
rm -f "$CONSOLE" "$QEMU_PIDFILE"
log "booting ($ACCEL, $SMP cpu, $MEM MB, timeout ${VM_TIMEOUT}s); console in $CONSOLE"
VT0=$(date +%s.%N)
timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 "${QARGS[@]}" -m "$MEM" -smp "$SMP" \
  -nodefaults -no-user-config -display none -no-reboot -serial "file:$CONSOLE" -pidfile "$QEMU_PIDFILE" \
  -kernel "$KDIR/vmlinuz" -initrd "$INITRD" \
  -append "console=ttyS0 panic=-1 oops=panic loglevel=4" </dev/null >"$CACHE/qemu.log" 2>&1 &
QPID=$!
wait "$QPID"
QRC=$?
QPID=""
VMS=$(awk -v a="$VT0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

# ---- 7. results -------------------------------------------------------------------------------
CLEAN=$CACHE/console.clean.log
[ -f "$CONSOLE" ] || touch "$CONSOLE"
sed -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' "$CONSOLE" >"$CLEAN"

passed=0
failed=0
declare -A seen=()
while IFS= read -r line; do
  case "$line" in
    "@@ ok "*)
      n=${line#@@ ok }; seen[$n]=1; passed=$((passed + 1)); echo "ok $n" ;;
    "@@ not ok "*)
      rest=${line#@@ not ok }; n=${rest%%:*}; seen[$n]=1; failed=$((failed + 1)); echo "not ok $rest" ;;
  esac
done <"$CLEAN"
plan=$(grep -m 1 '^@@ plan ' "$CLEAN" | cut -c 9-)
why="qemu exit status $QRC"
[ "$QRC" = 124 ] || [ "$QRC" = 137 ] && why="the VM was killed after ${VM_TIMEOUT}s"
if [ -z "$plan" ]; then
  echo "not ok vm-boot: the suite never started ($why)"
  failed=$((failed + 1))
fi
for n in $plan; do
  if [ -z "${seen[$n]:-}" ]; then
    echo "not ok $n: no result ($why)"
    failed=$((failed + 1))
  fi
done
if ! grep -q '^@@ done' "$CLEAN"; then
  echo "not ok vm-complete: the suite did not finish ($why)"
  failed=$((failed + 1))
fi

if [ "$failed" -gt 0 ]; then
  echo "--- VM console (from /init on) ---"
  sed -n '/^## vm: kernel/,$p' "$CLEAN" | grep -v '^@@ ' | tail -n 400
  [ -s "$CACHE/qemu.log" ] && { echo "--- qemu ---"; tail -n 20 "$CACHE/qemu.log"; }
  echo "---"
else
  grep -E '^## (vm|device mode|make: exit|steved runs|steved \(pid)' "$CLEAN"
fi
log "VM ran ${VMS}s ($ACCEL); whole run $(elapsed)s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
