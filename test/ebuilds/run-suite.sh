#!/usr/bin/env bash
# The Gentoo overlay (ebuilds/), the service files (packaging/) and the release and install
# scripts, tested for real on a machine without Portage (Debian):
#
#  lint     bash -n and shellcheck on every ebuild, the OpenRC init script and conf.d, the
#           emerge shim's bashrc modules (when the tree has them) and the scripts; with the
#           same options, a planted mistake must still be reported
#  overlay  check-overlay.py: layout, metadata.xml and USE flags, LICENSE against the bundled
#           modules, the accounts against the unit, udev/sandbox/toml against the daemon
#  portage  real Portage (3.0.73 and 3.0.83 from PyPI) on tiny ebuilds with the overlay's
#           IUSE/RESTRICT/PROPERTIES (portage-test-restrict.sh): FEATURES=test runs the live
#           steved's and the plugin's src_test only with ALLOW_TEST=privileged, never the
#           release steved's
#  install  scripts/install.sh from this checkout into a DESTDIR, then from that tree: steved
#           --version, stevectl --help, jobclient --help, the shipped steved.toml, the OpenRC
#           and systemd command lines, systemd-analyze verify (a broken copy must fail), and a
#           FUSE smoke test: the installed steved on a temporary file, a token taken and
#           returned (seen by the installed stevectl), jobclient run, SIGTERM, nothing mounted
#  release  a git clone of this repository, its scripts/release.sh --offline with no network
#           (unshare -n): checksums, Manifest, artefact names = the release ebuild's SRC_URI,
#           node_modules tarball = the production closure without compiled addons
#  pkgcheck pkgcheck scan (pinned, .venv-pkgcheck) of this checkout's overlay and of the clone's
#           after release.sh wrote its Manifest, against a stub ::gentoo (pkgcheck-overlay.sh
#           says which checks that leaves out): no error-level result; the same scan must
#           report MissingManifest (an error) for an overlay without its Manifest
#  ebuild   the release ebuild's phases run by mock-portage.sh from those artefacts with no
#           network (node-gyp against /usr/include/node), the same checks on its image,
#           USE=portage, pkg_postinst's messages with and without make.conf set up
#  live     the 9999 ebuild's phases on the clone (npm ci from the npm cache), while the release
#           builds in the background; its image has the same files, byte for byte but for the
#           addons, as the release ebuild's
#
# Needs root, /dev/fuse, shellcheck, systemd-analyze, unshare, python3, and the npm cache and
# .venv-pkgcheck that scripts/setup.sh fills. Every steved it starts is stopped and unmounted on exit.
# Ends with "N passed, N failed"; exits 1 on any failure.
# Inline scripts get their values as arguments, so their $1 stays unexpanded on purpose.
# shellcheck disable=SC2016
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/test/ebuilds
MOCK=$HERE/mock-portage.sh
cd "$ROOT" || exit 1
export LC_ALL=C
unset MAKEFLAGS MFLAGS CARGO_MAKEFLAGS

TMP=$(mktemp -d "${TMPDIR:-/tmp}/steved-ebuilds.XXXXXX")
PIDS=()   # steved processes started here
MOUNTS=() # their jobserver files
BGPIDS=() # background builds, each the leader of its own process group (setsid)

mounted() { awk -v p="$1" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo; }
cleanup() {
  local pid m
  for pid in "${BGPIDS[@]}"; do kill -TERM -- "-$pid" "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for m in "${MOUNTS[@]}"; do mounted "$m" && umount -l "$m"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
notok() {
  failed=$((failed + 1)); echo "not ok - $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then tail -n 25 "$2" | sed 's/^/    # /'; fi
}
# t NAME COMMAND...: pass when COMMAND exits 0; its output is shown only on failure.
t() {
  local name=$1; shift
  if "$@" >"$TMP/t.log" 2>&1; then ok "$name"; else notok "$name" "$TMP/t.log"; fi
}
# Count the "ok - " / "not ok - " lines of a checker's output.
tally() {
  local line
  while IFS= read -r line; do
    case $line in
      "ok - "*) passed=$((passed + 1)); echo "$line" ;;
      "not ok - "*) failed=$((failed + 1)); echo "$line" ;;
      *) echo "$line" ;;
    esac
  done
}
section() { printf '\n=== %s (at %ss)\n' "$*" "$SECONDS"; }

VERSION=$(node -p 'require("./packages/steved/package.json").version')
for need in shellcheck systemd-analyze unshare python3 git node npm; do
  command -v "$need" >/dev/null || notok "tool $need is installed (scripts/setup.sh)"
done
if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
  notok "root and /dev/fuse (FUSE smoke tests, unshare -n)"
fi

# ============================================================================================
section "lint: bash -n and shellcheck"
# Ebuilds and OpenRC files are read by Portage and openrc-run, which set and consume the
# variables: SC2034 (assigned, unused), SC2154 and SC2153 (used, never assigned) are noise here.
EBUILD_SC=(-s bash "--exclude=SC2034,SC2154,SC2153")
OPENRC_SC=(-s sh "--exclude=SC2034,SC2154")
while IFS= read -r f; do
  t "bash -n ${f}" bash -n "$f"
  t "shellcheck ${f}" shellcheck "${EBUILD_SC[@]}" "$f"
done < <(find ebuilds -name '*.ebuild' | sort)
for f in packaging/steved.initd packaging/steved.confd; do
  t "bash -n and sh -n ${f}" sh -c 'bash -n "$1" && sh -n "$1"' sh "$f"
  t "shellcheck ${f}" shellcheck "${OPENRC_SC[@]}" "$f"
done
hooks=$(find packages/emerge-shim/share -type f 2>/dev/null | sort)
if [ -n "$hooks" ]; then
  while IFS= read -r f; do
    t "bash -n ${f}" bash -n "$f"
    t "shellcheck ${f}" shellcheck -s bash "$f"
  done <<<"$hooks"
else
  echo "skip - the emerge shim's bashrc module: no packages/emerge-shim/share in this tree"
fi
for f in scripts/install.sh scripts/release.sh scripts/build-addons.sh "$MOCK" "$HERE/run-suite.sh" "$HERE/pkgcheck-overlay.sh" "$HERE/portage-test-restrict.sh"; do
  t "shellcheck ${f#"$ROOT"/}" shellcheck "$f"
done
# The options above must not hide real mistakes: an unquoted path is still reported.
printf 'EAPI=8\nsrc_install() {\n\trm -rf ${D}/usr/share/foo\n}\n' >"$TMP/planted.ebuild"
printf '#!/sbin/openrc-run\nstart_pre() {\n\trm -f $pidfile\n}\n' >"$TMP/planted.initd"
t "shellcheck with the ebuild options still reports an unquoted \${D} (SC2086)" \
  sh -c '! shellcheck "$@" >"$0.out" && grep -q SC2086 "$0.out"' "$TMP/sc1" "${EBUILD_SC[@]}" "$TMP/planted.ebuild"
t "shellcheck with the OpenRC options still reports an unquoted \$pidfile (SC2086)" \
  sh -c '! shellcheck "$@" >"$0.out" && grep -q SC2086 "$0.out"' "$TMP/sc2" "${OPENRC_SC[@]}" "$TMP/planted.initd"

# ============================================================================================
section "overlay: structure and agreement between files"
python3 "$HERE/check-overlay.py" "$ROOT" >"$TMP/overlay.out" 2>&1
overlay_rc=$?
tally <"$TMP/overlay.out"
if [ "$overlay_rc" != 0 ] && ! grep -q '^not ok - ' "$TMP/overlay.out"; then notok "check-overlay.py ran" "$TMP/overlay.out"; fi

# ============================================================================================
section "portage: when real Portage runs the overlay's test phases"
for pv in 3.0.73 3.0.83; do
  bash "$HERE/portage-test-restrict.sh" "$ROOT" "$pv" >"$TMP/restrict.out" 2>&1
  restrict_rc=$?
  tally <"$TMP/restrict.out"
  if [ "$restrict_rc" != 0 ] && ! grep -q '^not ok - ' "$TMP/restrict.out"; then notok "portage-test-restrict.sh $pv ran" "$TMP/restrict.out"; fi
done

# ============================================================================================
# Checks of an installed tree (a DESTDIR or an ebuild's image), as functions for t().

links_into_app() { # DEST APPDIR: the commands are relative links to packages/*/bin/*.js
  local c l app
  app=$(readlink -f "$2") || return 1
  for c in steved stevectl jobclient; do
    l=$(readlink "$1/usr/bin/$c") || { echo "$c is not a link"; return 1; }
    case $l in /*) echo "$c -> $l is absolute"; return 1 ;; esac
    case $(readlink -f "$1/usr/bin/$c") in "$app"/packages/*/bin/*.js) ;; *) echo "$c -> $l"; return 1 ;; esac
  done
}
first_line_is() { # PREFIX COMMAND...
  local want=$1 first; shift
  first=$("$@" | head -1); echo "$first"
  case $first in "$want"*) ;; *) return 1 ;; esac
}
config_clean() { # DEST: the shipped steved.toml parses and validates with no warning
  local out
  out=$("$1/usr/bin/steved" --config "$1/etc/steved.toml" --version 2>"$TMP/toml.err")
  cat "$TMP/toml.err"
  [ "$out" = "$VERSION" ] && ! [ -s "$TMP/toml.err" ]
}
only_addons() { # APPDIR: two compiled addons; no sources, objects or build state
  local n bad
  n=$(find "$1" -name '*.node' | wc -l)
  [ "$n" = 2 ] || { echo "$n addons"; return 1; }
  bad=$(find "$1" \( -path '*/build/*' ! -name '*.node' ! -type d \) -o -name '*.tsbuildinfo' \
    -o -name '*.cc' -o -name binding.gyp -o -path "$1/packages/*/src" -o -path "$1/packages/*/test")
  [ -z "$bad" ] || { echo "$bad"; return 1; }
}
prod_closure() { # prints the lock paths of the production dependencies (modules and links)
  node "$ROOT/scripts/prod-modules.js" "$ROOT" packages/steved | awk '$1 != "workspace" { print $2 }' | sort
}
node_modules_exact() { # APPDIR
  local want have
  want=$(prod_closure)
  have=$(cd "$1" && { find node_modules -mindepth 1 -maxdepth 1 ! -name '@*'
    find node_modules -mindepth 2 -maxdepth 2 -path 'node_modules/@*'; } | sort)
  printf 'want:\n%s\nhave:\n%s\n' "$want" "$have"
  [ "$want" = "$have" ]
}
run_as_installed() { # DEST COMMAND ARGS...: run an absolute command line inside DEST, + --version
  local dest=$1 cmd=$2 a args=(); shift 2
  for a in "$@"; do [ "$a" = /etc/steved.toml ] && a=$dest/etc/steved.toml; args+=("$a"); done
  echo "$cmd ${args[*]}"
  [ "$cmd" = /usr/bin/steved ] && [ "$("$dest$cmd" "${args[@]}" --version)" = "$VERSION" ]
}
systemd_cmdline() { # DEST: ExecStart= of the installed unit
  local words
  read -r -a words < <(sed -n 's/^ExecStart=//p' "$1/usr/lib/systemd/system/steved.service")
  run_as_installed "$1" "${words[@]}"
}
openrc_cmdline() { # DEST [STEVED_USER=...]: what openrc-run would start, from conf.d + init.d
  local words
  read -r -a words < <(env "${@:2}" sh -c '. "$1"; RC_SVCNAME=steved; . "$2"; echo "$command" $command_args' \
    sh "$1/etc/conf.d/steved" "$1/etc/init.d/steved")
  echo "${words[*]}"
  case " ${words[*]} " in *" --user steved "*) [ $# = 1 ] || return 1 ;; *) [ $# != 1 ] || return 1 ;; esac
  run_as_installed "$1" "${words[@]}"
}

# systemd-analyze verify needs the units the unit pulls in (targets, modprobe@.service) and
# every program it names, under one root: the host's units, the installed tree on top, and
# the host's copies of the programs the unit runs from outside this package (/bin/kill, ...).
sysroot() { # DEST ROOTDIR
  local dest=$1 root=$2 p
  rm -rf "$root"; mkdir -p "$root/usr/lib/systemd/system"
  cp -a /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/" || return 1
  cp -a "$dest/." "$root/" || return 1
  while IFS= read -r p; do
    if [ -e "$root$p" ] || [ -L "$root$p" ]; then continue; fi
    [ -x "$p" ] || { echo "the unit runs $p, which this system does not have"; return 1; }
    mkdir -p "$root$(dirname "$p")" && cp -L "$p" "$root$p" || return 1
  done < <(sed -nE 's/^Exec[A-Za-z]*=[-+@!:]*([^ ]+).*/\1/p' "$dest/usr/lib/systemd/system/steved.service")
}
verify_clean() { # ROOTDIR: systemd-analyze verify passes and says nothing
  local out rc
  out=$(systemd-analyze verify --root="$1" "$1/usr/lib/systemd/system/steved.service" 2>&1); rc=$?
  printf '%s\n' "$out"
  [ "$rc" = 0 ] && [ -z "$out" ]
}
verify_fails_naming() { # ROOTDIR WORD
  local out rc
  out=$(systemd-analyze verify --root="$1" "$1/usr/lib/systemd/system/steved.service" 2>&1); rc=$?
  printf '%s\n' "$out"
  [ "$rc" != 0 ] && printf '%s\n' "$out" | grep -q -- "$2"
}

installed_tree() { # LABEL DEST LIBDIR
  local L=$1 dest=$2 app=$2$3/steved
  t "$L: usr/bin/{steved,stevectl,jobclient} are relative links into $3/steved" links_into_app "$dest" "$app"
  t "$L: steved --version prints $VERSION" test "$("$dest/usr/bin/steved" --version 2>&1)" = "$VERSION"
  t "$L: stevectl --help" first_line_is "Usage: stevectl" "$dest/usr/bin/stevectl" --help
  t "$L: jobclient --help" first_line_is "Usage: jobclient" "$dest/usr/bin/jobclient" --help
  t "$L: the shipped /etc/steved.toml is accepted without a warning" config_clean "$dest"
  t "$L: compiled addons only, no sources or build leftovers" only_addons "$app"
  t "$L: node_modules holds exactly the production dependencies" node_modules_exact "$app"
  # The service managers' command lines, given to the installed steved (--version stops
  # right after parsing them, so nothing starts).
  t "$L: the systemd unit's ExecStart is accepted by the installed steved" systemd_cmdline "$dest"
  t "$L: the OpenRC service runs the installed steved with --user steved" openrc_cmdline "$dest"
  t "$L: the OpenRC service with STEVED_USER empty keeps root (no --user)" openrc_cmdline "$dest" STEVED_USER=
  if sysroot "$dest" "$TMP/$L.sysroot" >"$TMP/sysroot.log" 2>&1; then
    t "$L: systemd-analyze verify steved.service: no complaint" verify_clean "$TMP/$L.sysroot"
  else
    notok "$L: a root for systemd-analyze verify" "$TMP/sysroot.log"
  fi
  smoke "$L" "$dest"
}

# The installed steved on a FUSE file: start, a token out and back, jobclient, stop, unmounted.
held_by_jobclient() { # DEST PATH
  local inside after
  inside=$("$1/usr/bin/jobclient" run --jobserver "$2" -- "$1/usr/bin/stevectl" --device "$2" --get-held) || return 1
  after=$("$1/usr/bin/stevectl" --device "$2" --get-held) || return 1
  echo "held while running: $inside, after: $after"
  [ "$inside" = 1 ] && [ "$after" = 0 ]
}
not_mounted() { ! mounted "$1"; }
smoke() { # LABEL DEST
  local L=$1 dest=$2 path=$TMP/$1.jobserver out=$TMP/$1.out err=$TMP/$1.err pid rc
  : >"$TMP/empty.toml"
  "$dest/usr/bin/steved" --config "$TMP/empty.toml" --transport fuse --path "$path" -j 2 >"$out" 2>"$err" &
  pid=$!
  PIDS+=("$pid"); MOUNTS+=("$path")
  for _ in $(seq 150); do
    grep -qx "MAKEFLAGS=--jobserver-auth=fifo:$path" "$out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$out" "$err" >"$TMP/start.log"
  if grep -qx "MAKEFLAGS=--jobserver-auth=fifo:$path" "$out" && mounted "$path"; then
    ok "$L: the installed steved serves a FUSE file and prints its MAKEFLAGS"
  else
    notok "$L: the installed steved serves a FUSE file and prints its MAKEFLAGS" "$TMP/start.log"
  fi
  t "$L: a raw client takes a token and returns it, as the installed stevectl sees" \
    python3 "$TMP/token.py" "$path" "$dest/usr/bin/stevectl"
  t "$L: jobclient run holds one token while its command runs" held_by_jobclient "$dest" "$path"
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  wait "$pid"; rc=$?
  t "$L: SIGTERM stops steved with status 0 (got $rc)" test "$rc" = 0
  t "$L: nothing is left mounted on the jobserver file" not_mounted "$path"
}

cat >"$TMP/token.py" <<'EOF'
# One token out and back on the jobserver file, checked with stevectl after each step.
import os, subprocess, sys
path, stevectl = sys.argv[1:3]
def held():
    return subprocess.run([stevectl, "--device", path, "--get-held"], check=True,
                          capture_output=True, text=True).stdout.strip()
assert held() == "0", f"held before: {held()}"
fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
token = os.read(fd, 1)
assert len(token) == 1, f"read returned {token!r}"
assert held() == "1", f"held after read: {held()}"
assert os.write(fd, token) == 1
assert held() == "0", f"held after write: {held()}"
os.close(fd)
print("token", token, "out and back")
EOF

# ============================================================================================
section "install: scripts/install.sh from this checkout"
D1=$TMP/destdir
layout_complete() { # DEST
  local f
  for f in usr/bin/steved usr/bin/stevectl usr/bin/jobclient etc/steved.toml etc/init.d/steved \
    etc/conf.d/steved etc/sandbox.d/90steved usr/lib/systemd/system/steved.service \
    usr/lib/udev/rules.d/90-steved.rules usr/lib64/steved/packages/steved/build/Release/steved.node \
    usr/lib64/steved/packages/jobclient/build/Release/jobclient.node; do
    [ -e "$1/$f" ] || { echo "missing $f"; return 1; }
  done
  [ -x "$1/etc/init.d/steved" ] && [ ! -e "$1/usr/lib/steved" ]
}
t "install.sh --prefix=/usr --libdir=/usr/lib64 into a DESTDIR" \
  env DESTDIR="$D1" bash scripts/install.sh --prefix=/usr --libdir=/usr/lib64 --without-emerge-shim
t "install.sh put every file where its layout says" layout_complete "$D1"
installed_tree checkout "$D1" /usr/lib64
# The same verification must fail for a unit whose program is not there.
if sysroot "$D1" "$TMP/broken.sysroot" >"$TMP/sysroot.log" 2>&1; then
  sed -i 's|^ExecStart=/usr/bin/steved|ExecStart=/usr/bin/steved-missing|' "$TMP/broken.sysroot/usr/lib/systemd/system/steved.service"
  t "systemd-analyze verify fails on a unit whose ExecStart is missing" verify_fails_naming "$TMP/broken.sysroot" steved-missing
else
  notok "a root for systemd-analyze verify" "$TMP/sysroot.log"
fi

# ============================================================================================
section "release: a clean clone; scripts/release.sh from it, without network"
CLONE=$TMP/clone DIST=$TMP/distfiles
RELEASE_EBUILD=$CLONE/ebuilds/dev-build/steved/steved-$VERSION.ebuild
LIVE_EBUILD=$CLONE/ebuilds/dev-build/steved/steved-9999.ebuild
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "note: this checkout has uncommitted changes; the clone, and so the release, has HEAD only"
fi
manifest_matches() { # DIR
  local kind f size b2 b2v sha shav n=0
  while read -r kind f size b2 b2v sha shav; do
    [ "$kind $b2 $sha" = "DIST BLAKE2B SHA512" ] || { echo "bad line for $f"; return 1; }
    if [ "$size" != "$(stat -c %s "$1/$f")" ] || [ "$b2v" != "$(b2sum "$1/$f" | cut -d' ' -f1)" ] ||
      [ "$shav" != "$(sha512sum "$1/$f" | cut -d' ' -f1)" ]; then
      echo "wrong size or hash for $f"; return 1
    fi
    n=$((n + 1))
  done <"$1/Manifest"
  [ "$n" = 2 ]
}
src_uri_is_release() { # EBUILD DIR
  local want have
  want=$(MOCK_BASE="$TMP/mock-a" bash "$MOCK" "$1" print-A | sort)
  have=$(cd "$2" && printf '%s\n' *.tar.xz | sort)
  printf 'SRC_URI: %s\nrelease: %s\n' "$want" "$have"
  [ -n "$want" ] && [ "$want" = "$have" ]
}
modules_tarball_exact() { # DIR CLONE
  local list want have
  list=$(tar -tJf "$1/steved-$VERSION-node_modules.tar.xz") || return 1
  if printf '%s\n' "$list" | grep -v "^steved-$VERSION/node_modules/"; then echo "^ outside node_modules"; return 1; fi
  if printf '%s\n' "$list" | grep -E '\.node$|/build/Release/'; then echo "^ compiled addons"; return 1; fi
  mapfile -t ws < <(node -p 'Object.keys(require(process.argv[1]).packages).filter(k => /^packages\/[^/]+$/.test(k)).join("\n")' "$2/package-lock.json")
  want=$(node "$2/scripts/prod-modules.js" "$2" "${ws[@]}" | awk '$1 != "workspace" { print $2 }' | sort)
  have=$(printf '%s\n' "$list" | sed -E "s,^steved-$VERSION/,,; s,^(node_modules/(@[^/]+/)?[^/]+).*,\1," | sort -u)
  printf 'want:\n%s\nhave:\n%s\n' "$want" "$have"
  [ "$want" = "$have" ]
}
source_tarball_exact() { # DIR CLONE
  local list want have ws
  list=$(tar -tJf "$1/steved-$VERSION.tar.xz" | sed "s,^steved-$VERSION/,,") || return 1
  want=$(git -C "$2" ls-tree -r --name-only HEAD | grep -Ev '^ebuilds/[^/]+/[^/]+/Manifest$' | sort)
  have=$(printf '%s\n' "$list" | grep -Ev '^packages/[^/]+/dist/' | sort)
  [ "$want" = "$have" ] || { diff <(echo "$want") <(echo "$have") | head -20; return 1; }
  for ws in steved jobclient; do
    grep -qx "packages/$ws/dist/index.js" <<<"$list" || { echo "no packages/$ws/dist"; return 1; }
  done
}
t "git clone of this repository" git clone -q "$ROOT" "$CLONE"
# The release (npm ci and tsc in a scratch copy) builds in the background, in its own
# process group, while the live ebuild builds below: the two take most of this suite's time.
setsid unshare -n bash "$CLONE/scripts/release.sh" --offline --out "$DIST" >"$TMP/release.log" 2>&1 &
RELEASE_PID=$!
BGPIDS+=("$RELEASE_PID")

section "live: dev-build/steved-9999 on the clone (while the release builds)"
ML=$TMP/mock-live
t "steved-9999.ebuild: src_unpack (git-r3, then npm ci from the npm cache)" \
  env MOCK_BASE="$ML" MOCK_EGIT_REPO="$CLONE" npm_config_offline=true bash "$MOCK" "$LIVE_EBUILD" pkg_setup src_unpack
t "steved-9999.ebuild: src_compile (tsc -b, node-gyp) and src_install, offline" \
  unshare -n env MOCK_BASE="$ML" bash "$MOCK" "$LIVE_EBUILD" pkg_setup src_prepare src_compile src_install

section "release: the artefacts"
wait "$RELEASE_PID"; release_rc=$?
if [ "$release_rc" = 0 ]; then
  ok "release.sh --offline in the clone, with no network (unshare -n)"
else
  notok "release.sh --offline in the clone, with no network (unshare -n): status $release_rc" "$TMP/release.log"
fi
t "SHA256SUMS verifies" bash -c 'cd "$1" && sha256sum -c SHA256SUMS' sh "$DIST"
t "Manifest: each artefact with its size, BLAKE2B and SHA512" manifest_matches "$DIST"
t "the artefacts are what steved-$VERSION.ebuild's SRC_URI fetches" src_uri_is_release "$RELEASE_EBUILD" "$DIST"
t "the node_modules tarball is the production closure, without compiled addons" modules_tarball_exact "$DIST" "$CLONE"
t "the source tarball is the commit's files plus the compiled packages/*/dist" source_tarball_exact "$DIST" "$CLONE"

# ============================================================================================
section "pkgcheck: the overlay against a stub ::gentoo"
PKGCHECK=$ROOT/.venv-pkgcheck/bin/pkgcheck
overlay_manifest_is_release() { # CLONE DIST: release.sh wrote the package's Manifest = its DIST lines
  local m=$1/ebuilds/dev-build/steved/Manifest
  cat "$m"
  [ -s "$m" ] && [ "$(LC_ALL=C sort "$m")" = "$(LC_ALL=C sort "$2/Manifest")" ]
}
scan_clean() { # OVERLAY
  bash "$HERE/pkgcheck-overlay.sh" "$1" "$PKGCHECK"
}
scan_catches_missing_manifest() { # OVERLAY: the same scan without Manifests fails, naming them
  local copy=$TMP/overlay-no-manifest rc=0
  rm -rf "$copy"; cp -a "$1" "$copy" && find "$copy" -name Manifest -delete
  bash "$HERE/pkgcheck-overlay.sh" "$copy" "$PKGCHECK" >"$TMP/nomf.out" 2>&1 || rc=$?
  cat "$TMP/nomf.out"
  [ "$rc" = 1 ] && grep -q 'MissingManifest: version '"$VERSION"'' "$TMP/nomf.out"
}
t "release.sh wrote the clone's ebuilds/dev-build/steved/Manifest: the DIST lines of its tarballs" \
  overlay_manifest_is_release "$CLONE" "$DIST"
t "pkgcheck scan of the clone's overlay with that Manifest: no error-level result" scan_clean "$CLONE/ebuilds"
same_release_after_manifest_commit() { # the committed Manifest still matches: no tarball changed
  git -C "$CLONE" add ebuilds &&
    git -C "$CLONE" -c user.name=release-test -c user.email=release-test@localhost commit -q --allow-empty -m "Manifest" || return 1
  unshare -n bash "$CLONE/scripts/release.sh" --offline --no-overlay --out "$TMP/distfiles2" >"$TMP/release2.log" 2>&1 ||
    { cat "$TMP/release2.log"; return 1; }
  cmp "$DIST/Manifest" "$TMP/distfiles2/Manifest" && cmp "$DIST/SHA256SUMS" "$TMP/distfiles2/SHA256SUMS"
}
t "release.sh of the commit that adds that Manifest makes the same tarballs, byte for byte" same_release_after_manifest_commit
t "pkgcheck scan of this checkout's overlay: no error-level result" scan_clean "$ROOT/ebuilds"
t "pkgcheck scan of the overlay without its Manifest: MissingManifest, an error" scan_catches_missing_manifest "$CLONE/ebuilds"

# ============================================================================================
section "ebuild: dev-build/steved-$VERSION from the release artefacts (mock Portage, no network)"
MB=$TMP/mock-release
output_has() { # FILE LINE...: every LINE is a whole line of FILE
  local l
  cat "$1"
  for l in "${@:2}"; do grep -qxF -- "$l" "$1" || { echo "MISSING: $l"; return 1; }; done
}
phase_out() { # OUTFILE ENV... -- PHASES: run the release ebuild's phases with ENV, output to OUTFILE
  local out=$1; shift
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  env MOCK_BASE="$MB" "${envs[@]}" bash "$MOCK" "$RELEASE_EBUILD" "$@" >"$out" 2>&1
}
portage_use() { # with USE=portage: the shim when the release has it, else a clear die
  local rc=0 img=$MB/image-portage module
  phase_out "$MB/portage.log" MOCK_D="$img" MOCK_USE=portage -- pkg_setup src_install || rc=$?
  cat "$MB/portage.log"
  if ! git -C "$CLONE" ls-files --error-unmatch packages/emerge-shim/package.json >/dev/null 2>&1; then
    [ "$rc" != 0 ] && grep -q '^die: ' "$MB/portage.log" && grep -q 'no packages/emerge-shim' "$MB/portage.log"
    return
  fi
  [ "$rc" = 0 ] || return 1
  # pkg_postinst tells users to source a file: it must be in the image and define the hook.
  MOCK_USE=portage ROOT="$TMP/root-set" phase_out "$MB/portage-postinst.log" -- pkg_postinst || return 1
  cat "$MB/portage-postinst.log"
  module=$(sed -n 's/^elog: *source \(.*\)$/\1/p' "$MB/portage-postinst.log")
  echo "module: $module"
  [ -n "$module" ] && [ -f "$img$module" ] && bash -n "$img$module" &&
    grep -q '^steved_jobserver_hook() {' "$img$module" &&
    grep -qxF 'elog:       steved_jobserver_hook' "$MB/portage-postinst.log" || return 1
  [ "$("$img/usr/bin/steved-emerge-shim" --help >/dev/null 2>&1; echo $?)" = 0 ] ||
    { echo "steved-emerge-shim --help failed"; return 1; }
}
postinst_new_system() {
  ROOT=$TMP/root-new phase_out "$TMP/postinst.log" -- pkg_postinst || return 1
  # The seeds' make.conf, the same text as README.md, steved --help and the shim's README.
  output_has "$TMP/postinst.log" 'elog:   MAKEOPTS="-j32 -l32"' 'elog:   NINJAOPTS="-l32"' \
    'elog:   MAKEFLAGS="-l32 --jobserver-auth=fifo:/dev/steve"' 'elog:     systemctl enable --now steved' \
    'elog:     rc-update add steved default' 'mock: udev_reload' || return 1
  grep -q 'Never put -j in' "$TMP/postinst.log"
}
postinst_configured() {
  ROOT=$TMP/root-set phase_out "$TMP/postinst.log" -- pkg_postinst || return 1
  cat "$TMP/postinst.log"
  ! grep -q '^elog: ' "$TMP/postinst.log"
}
postinst_fuse_hint() { # WANT (yes/no)
  local got=no
  ROOT='' phase_out "$TMP/postinst.log" -- pkg_postinst || return 1
  grep -qxF 'elog:   MAKEFLAGS="-l32 --jobserver-auth=fifo:/run/steved/jobserver"' "$TMP/postinst.log" && got=yes
  echo "FUSE hint printed: $got"
  [ "$got" = "$1" ]
}
mkdir -p "$TMP/root-new/etc/portage" "$TMP/root-set/etc/portage"
printf 'MAKEFLAGS="--jobserver-auth=fifo:/dev/steve"\n' >"$TMP/root-set/etc/portage/make.conf"
if [ -e /dev/cuse ]; then want_fuse=no; else want_fuse=yes; fi

pretend_checks_cuse() {
  phase_out "$TMP/pretend.log" -- pkg_pretend || return 1
  cat "$TMP/pretend.log"
  grep -q 'CONFIG_CHECK=~CUSE WARNING_CUSE=CONFIG_CUSE is not set' "$TMP/pretend.log"
}
t "steved-$VERSION.ebuild: pkg_pretend checks ~CUSE" pretend_checks_cuse
t "steved-$VERSION.ebuild: src_unpack, src_compile (node-gyp --nodedir=/usr), src_install, offline" \
  unshare -n env MOCK_BASE="$MB" DISTDIR="$DIST" bash "$MOCK" "$RELEASE_EBUILD" \
  pkg_setup src_unpack src_prepare src_compile src_install
installed_tree release-ebuild "$MB/image" /usr/lib
t "steved-$VERSION.ebuild: DOCS installed" test -s "$MB/image/usr/share/doc/steved-$VERSION/control.md"
t "steved-$VERSION.ebuild with USE=portage: the emerge shim, or a die naming what is missing" portage_use
t "pkg_postinst on a new system: the exact make.conf lines and how to start the service" postinst_new_system
t "pkg_postinst with make.conf already pointing at a jobserver: no set-up text" postinst_configured
t "pkg_postinst on / names the FUSE path exactly when /dev/cuse is missing (here: $want_fuse)" postinst_fuse_hint "$want_fuse"

# ============================================================================================
section "live and release images"
same_images() { # RELEASE_IMAGE LIVE_IMAGE: same files and links, same bytes but for the addons
  sums() {
    (cd "$1" && find . \( -type f -o -type l \) ! -name '*.node' | sort | while IFS= read -r f; do
      if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f $(sha256sum <"$f" | cut -c1-16)"; fi
    done | sed "s,/steved-9999/,/steved-PV/,; s,/steved-$VERSION/,/steved-PV/,")
  }
  local a b
  a=$(sums "$1") b=$(sums "$2")
  [ "$a" = "$b" ] || { diff <(echo "$a") <(echo "$b") | head -20; return 1; }
  [ "$(cd "$1" && find . -name '*.node' | sort)" = "$(cd "$2" && find . -name '*.node' | sort)" ]
}
t "the live and the release image hold the same files, the same bytes but for the addons" same_images "$MB/image" "$ML/image"
smoke live-ebuild "$ML/image"

echo
echo "(${SECONDS}s)"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
