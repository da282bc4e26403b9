#!/usr/bin/env bash
# Install steved, stevectl and jobclient (and the emerge shim, when asked) from a built tree:
# a checkout after `npm run build`, or a release tarball after scripts/build-addons.sh.
# Nothing is compiled or fetched here. DESTDIR is honoured, so packagers (the Gentoo ebuild)
# install into an image:
#
#   DESTDIR=/tmp/image scripts/install.sh --prefix=/usr --libdir=/usr/lib64
#
# Layout (prefix /usr):
#   /usr/lib/steved/packages/{steved,jobclient}/  package.json, bin/, dist/, build/Release/*.node
#   /usr/lib/steved/node_modules/                 production dependencies only (scripts/prod-modules.js)
#   /usr/bin/{steved,stevectl,jobclient}          relative symlinks to the packages' bin/*.js
#   /etc/steved.toml                              the configuration (kept if one is already there)
#   /usr/lib/systemd/system/steved.service, /etc/init.d/steved, /etc/conf.d/steved,
#   /usr/lib/udev/rules.d/90-steved.rules, /etc/sandbox.d/90steved
#   /usr/share/steved/steved-jobserver.bashrc     the shim's share/ (--with-emerge-shim): the
#                                                 Portage bashrc module, a symlink into the package
#
# Options (defaults in brackets):
#   --prefix=DIR            [/usr/local]
#   --bindir=DIR            [PREFIX/bin]
#   --libdir=DIR            [PREFIX/lib]; the packages go to LIBDIR/steved
#   --datadir=DIR           [PREFIX/share]
#   --sysconfdir=DIR        [/etc]
#   --systemdunitdir=DIR    [PREFIX/lib/systemd/system]; "none" skips the unit
#   --udevrulesdir=DIR      [/usr/lib/udev/rules.d with prefix /usr, else SYSCONFDIR/udev/rules.d]; "none" skips
#   --no-openrc             skip SYSCONFDIR/init.d/steved and SYSCONFDIR/conf.d/steved
#   --no-sandbox            skip SYSCONFDIR/sandbox.d/90steved (Gentoo's sandbox)
#   --with-emerge-shim      install packages/emerge-shim (an error if this tree has none)
#   --without-emerge-shim   do not    [default: install it when the tree has it]
set -euo pipefail
umask 022
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
die() { printf 'install: %s\n' "$*" >&2; exit 1; }
log() { printf '[install] %s\n' "$*" >&2; }

prefix=/usr/local bindir="" libdir="" datadir="" sysconfdir=/etc
unitdir="" udevdir="" openrc=1 sandbox=1 shim=auto
for arg in "$@"; do
  case $arg in
    --prefix=*) prefix=${arg#*=} ;;
    --bindir=*) bindir=${arg#*=} ;;
    --libdir=*) libdir=${arg#*=} ;;
    --datadir=*) datadir=${arg#*=} ;;
    --sysconfdir=*) sysconfdir=${arg#*=} ;;
    --systemdunitdir=*) unitdir=${arg#*=} ;;
    --udevrulesdir=*) udevdir=${arg#*=} ;;
    --no-openrc) openrc=0 ;;
    --no-sandbox) sandbox=0 ;;
    --with-emerge-shim) shim=yes ;;
    --without-emerge-shim) shim=no ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$arg' (see --help; DESTDIR comes from the environment)" ;;
  esac
done
for d in "$prefix" "$sysconfdir"; do
  case $d in /*) ;; *) die "directories must be absolute (got '$d')" ;; esac
done
bindir=${bindir:-$prefix/bin}
libdir=${libdir:-$prefix/lib}
datadir=${datadir:-$prefix/share}
unitdir=${unitdir:-$prefix/lib/systemd/system}
if [ -z "$udevdir" ]; then
  if [ "$prefix" = /usr ]; then udevdir=/usr/lib/udev/rules.d; else udevdir=$sysconfdir/udev/rules.d; fi
fi
dest=${DESTDIR:-}
dest=${dest%/}
appdir=$libdir/steved

# --- what to install ----------------------------------------------------------
workspaces=(packages/steved)
case $shim in
  yes) [ -f packages/emerge-shim/package.json ] || die "--with-emerge-shim: this tree has no packages/emerge-shim" ;;
  auto) [ -f packages/emerge-shim/package.json ] && shim=yes ;;
esac
[ "$shim" = yes ] && workspaces+=(packages/emerge-shim)

command -v node >/dev/null || die "node is not on PATH"
plan=$(node scripts/prod-modules.js "$ROOT" "${workspaces[@]}") || die "cannot work out the production dependencies"
mapfile -t ws_list < <(awk '$1 == "workspace" {print $2}' <<<"$plan")
mapfile -t mod_list < <(awk '$1 == "module" {print $2}' <<<"$plan")
mapfile -t link_list < <(awk '$1 == "link" {print $2 " " $3}' <<<"$plan")

# Refuse a tree that is not built: a half install is worse than none.
for ws in "${ws_list[@]}"; do
  [ -d "$ws/dist" ] || die "$ws/dist is missing: build first (npm run build, or a release tarball)"
  if [ -f "$ws/binding.gyp" ] && ! ls "$ws"/build/Release/*.node >/dev/null 2>&1; then
    die "$ws has no built addon (build/Release/*.node): run scripts/build-addons.sh (or npm run build)"
  fi
done
for m in "${mod_list[@]}"; do
  [ -f "$m/package.json" ] || die "$m is missing: run npm ci (or unpack the node_modules tarball)"
done

# Copy PATHS (relative to the tree) into $dest$appdir, owned by whoever installs, without
# any nested node_modules (those that are needed are entries of their own).
copy() {
  local excl=()
  for p in "$@"; do excl+=(--exclude="$p/node_modules"); done
  tar -C "$ROOT" -cf - --owner=0 --group=0 --numeric-owner --exclude='*.tsbuildinfo' "${excl[@]}" "$@" |
    tar -C "$dest$appdir" -xf - --no-same-owner --no-same-permissions
}

log "packages -> $dest$appdir"
rm -rf "$dest$appdir"
mkdir -p "$dest$appdir"
for ws in "${ws_list[@]}"; do
  # What npm would publish ("files" in package.json, each entry by its top directory, else
  # bin/ and dist/), without the native sources and npm's prebuilt addons, plus the addon
  # compiled here.
  parts=()
  while read -r p; do
    case $p in native|binding.gyp|prebuilds|src|test) continue ;; esac
    [ -e "$ws/$p" ] && parts+=("$ws/$p")
  done < <(node -e '
    const top = (f) => f.replace(/^\.\//, "").split("/")[0]
    for (const f of new Set((require(process.argv[1]).files ?? ["bin", "dist"]).map(top))) console.log(f)' "$ROOT/$ws/package.json")
  for p in package.json README.md LICENSE COPYING; do [ -e "$ws/$p" ] && parts+=("$ws/$p"); done
  for p in "$ws"/*.schema.json "$ws"/build/Release/*.node; do [ -e "$p" ] && parts+=("$p"); done
  copy "${parts[@]}"
done
[ ${#mod_list[@]} -gt 0 ] && copy "${mod_list[@]}"
for l in "${link_list[@]}"; do
  read -r at target <<<"$l"
  mkdir -p "$(dirname "$dest$appdir/$at")"
  ln -sfn "$(realpath -m --relative-to="$(dirname "/$at")" "/$target")" "$dest$appdir/$at"
done
chmod -R u+rwX,go+rX,go-w "$dest$appdir"

# --- commands: relative symlinks, so an image or a DESTDIR tree runs as it lies ------
mkdir -p "$dest$bindir"
for ws in "${ws_list[@]}"; do
  while read -r name rel; do
    [ -n "$name" ] || continue
    target=$dest$appdir/$ws/$rel
    [ -f "$target" ] || die "$ws/package.json names bin $name -> $rel, which is missing"
    chmod 0755 "$target"
    ln -sfn "$(realpath -m --relative-to="$bindir" "$appdir/$ws/$rel")" "$dest$bindir/$name"
    log "command $bindir/$name"
  done < <(node -e '
    const p = require(process.argv[1]); let b = p.bin ?? {}
    if (typeof b === "string") b = { [p.name]: b }
    for (const [k, v] of Object.entries(b)) console.log(k, v.replace(/^\.\//, ""))' "$ROOT/$ws/package.json")
done

# --- service files and configuration ---------------------------------------------
# packaging/ names the standard paths; rewrite them when this install uses others.
place() { # SOURCE DEST MODE
  mkdir -p "$(dirname "$2")"
  sed -e "s|/usr/bin/steved|$bindir/steved|g" -e "s|/etc/steved.toml|$sysconfdir/steved.toml|g" "$1" >"$2"
  chmod "$3" "$2"
  log "${2#"$dest"}"
}
if [ -e "$dest$sysconfdir/steved.toml" ]; then
  place packaging/steved.toml "$dest$sysconfdir/steved.toml.new" 0644
  log "kept the existing $sysconfdir/steved.toml; the shipped one is steved.toml.new"
else
  place packaging/steved.toml "$dest$sysconfdir/steved.toml" 0644
fi
[ "$unitdir" != none ] && place packaging/steved.service "$dest$unitdir/steved.service" 0644
[ "$udevdir" != none ] && place packaging/90-steved.rules "$dest$udevdir/90-steved.rules" 0644
if [ "$openrc" = 1 ]; then
  place packaging/steved.initd "$dest$sysconfdir/init.d/steved" 0755
  place packaging/steved.confd "$dest$sysconfdir/conf.d/steved" 0644
fi
[ "$sandbox" = 1 ] && place packaging/sandbox.conf "$dest$sysconfdir/sandbox.d/90steved" 0644

# --- the Portage bashrc module of the emerge shim -----------------------------------
# The shim's share/ is DATADIR/steved/ (its module documents
# "source /usr/share/steved/steved-jobserver.bashrc"): relative symlinks into the package.
if [ "$shim" = yes ]; then
  shimdir=$appdir/packages/emerge-shim
  mapfile -t shared < <(cd "$dest$shimdir/share" 2>/dev/null && find . ! -type d | sed 's,^\./,,' | LC_ALL=C sort)
  [ ${#shared[@]} -gt 0 ] || die "packages/emerge-shim has no share/ (its Portage bashrc module) to install"
  for f in "${shared[@]}"; do
    mkdir -p "$(dirname "$dest$datadir/steved/$f")"
    ln -sfn "$(realpath -m --relative-to="$(dirname "$datadir/steved/$f")" "$shimdir/share/$f")" "$dest$datadir/steved/$f"
    log "$datadir/steved/$f -> $shimdir/share/$f"
  done
fi
log "done"
