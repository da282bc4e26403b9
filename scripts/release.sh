#!/usr/bin/env bash
# Build the release artefacts from a commit (HEAD unless --ref), never from the working tree,
# in a scratch copy, so a checkout in use is not touched:
#
#   OUT/steved-V.tar.xz               `git archive` of the commit, plus the compiled JavaScript
#                                     (packages/*/dist), so installing needs no TypeScript
#   OUT/steved-V-node_modules.tar.xz  the production dependencies (steved-V/node_modules/...,
#                                     workspace links included), no built addons: the addons are
#                                     compiled where they run (scripts/build-addons.sh)
#   OUT/SHA256SUMS                    sha256sum -c format
#   OUT/Manifest                      DIST lines (BLAKE2B, SHA512) of both tarballs
#   ebuilds/CAT/PN/Manifest           (in this checkout, unless --no-overlay) for each overlay
#                                     package with a V ebuild: the DIST lines of the artefacts
#                                     its SRC_URI fetches; lines for other files are kept
#
# Both tarballs unpack into steved-V/; with them, an offline install is
#   scripts/build-addons.sh --nodedir=/usr && DESTDIR=... scripts/install.sh --prefix=/usr
# Archives are reproducible: sorted, owner 0, every mtime set to the commit's time. The
# overlay's Manifests are left out of the source tarball, and the time is that of the last
# commit that changed anything else, so committing the Manifests this writes changes no
# tarball: a release of that next commit is byte for byte the same, and matches them.
#
# Usage: scripts/release.sh [--out DIR] [--ref REF] [--offline] [--no-overlay]
#   --out DIR     where to write (default: release/ in the checkout; it ignores itself in git)
#   --ref REF     the commit to release (default: HEAD)
#   --offline     npm must take every package from its cache (no network at all)
#   --no-overlay  do not write ebuilds/*/*/Manifest in this checkout
set -euo pipefail
umask 022
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { printf 'release: %s\n' "$*" >&2; exit 1; }
log() { printf '[release] %s\n' "$*" >&2; }

out=$ROOT/release ref=HEAD npm_net=--prefer-offline overlay=$ROOT/ebuilds
while [ $# -gt 0 ]; do
  case $1 in
    --out=*) out=${1#*=} ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    --ref=*) ref=${1#*=} ;;
    --ref) ref=${2:?--ref needs a commit}; shift ;;
    --offline) npm_net=--offline ;;
    --no-overlay) overlay="" ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
for tool in git node npm tar xz sha256sum sha512sum b2sum; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done

commit=$(git -C "$ROOT" rev-parse --verify "$ref^{commit}") || die "no commit '$ref' in $ROOT"
version=$(git -C "$ROOT" show "$commit:packages/steved/package.json" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).version))')
[[ $version =~ ^[0-9]+(\.[0-9]+)*$ ]] || die "packages/steved/package.json has version '$version'; a release needs a plain version"
name=steved-$version
# The overlay's Manifests describe the tarballs; they are not part of them.
MANIFESTS=':(exclude,glob)ebuilds/*/*/Manifest'
mtime=$(git -C "$ROOT" log -1 --format=%ct "$commit" -- . "$MANIFESTS")
if [ "$ref" = HEAD ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
  log "note: the working tree has uncommitted changes; they are not in the release (it is built from $commit)"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/steved-release.XXXXXX")
trap 'rm -rf "$stage"' EXIT
src=$stage/$name

log "$name from $(git -C "$ROOT" rev-parse --short "$commit"): exporting"
git -C "$ROOT" archive --format=tar --prefix="$name/" "$commit" | tar -C "$stage" -xf -

log "npm ci ($npm_net) and tsc -b in a scratch copy"
(cd "$src" && npm ci "$npm_net" --no-audit --no-fund --ignore-scripts --loglevel=error >&2) ||
  die "npm ci failed${npm_net:+ ($npm_net: is the npm cache populated? run npm ci once online)}"
(cd "$src" && node_modules/.bin/tsc -b) || die "tsc -b failed"

mapfile -t workspaces < <(cd "$src" && node -e '
  const lock = require("./package-lock.json")
  for (const k of Object.keys(lock.packages)) if (k.startsWith("packages/") && !k.includes("/node_modules/")) console.log(k)')
for ws in "${workspaces[@]}"; do
  [ -d "$src/$ws/dist" ] || die "$ws has no dist/ after tsc -b (is it in the root tsconfig.json references?)"
done

# tar from a NUL-separated list of paths relative to $stage, in the given (sorted) order.
pack() { # LIST OUTPUT
  tar -C "$stage" --null --no-recursion -T "$1" -cf - \
    --format=gnu --mtime="@$mtime" --owner=0 --group=0 --numeric-owner --mode=u+rw,go+r,go-w |
    xz -T1 -6 >"$2"
}

mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -e "$out/.gitignore" ] || printf '*\n' >"$out/.gitignore"

log "source tarball: the commit's files + packages/*/dist"
{
  git -C "$ROOT" ls-tree -r -z --name-only "$commit" | while IFS= read -r -d '' f; do
    [[ $f =~ ^ebuilds/[^/]+/[^/]+/Manifest$ ]] || printf '%s/%s\0' "$name" "$f"
  done
  for ws in "${workspaces[@]}"; do
    (cd "$stage" && find "$name/$ws/dist" \( -type f -o -type l \) ! -name '*.tsbuildinfo' -print0)
  done
} | LC_ALL=C sort -z -u >"$stage/src.list"
pack "$stage/src.list" "$out/$name.tar.xz"

log "node_modules tarball: production dependencies of ${workspaces[*]}"
plan=$(node "$ROOT/scripts/prod-modules.js" "$src" "${workspaces[@]}") || die "cannot work out the production dependencies"
{
  while read -r kind a _; do
    case $kind in
      module)
        # Each module without its nested node_modules (needed ones are entries of their own),
        # and without compiled addons: those must be built for the machine they run on.
        (cd "$stage" && find "$name/$a" -path "$name/$a/node_modules" -prune -o \
          \( -type f -o -type l \) ! -name '*.node' ! -path '*/build/Release/*' -print0) ;;
      link) printf '%s/%s\0' "$name" "$a" ;;
    esac
  done <<<"$plan"
} | LC_ALL=C sort -z -u >"$stage/mod.list"
[ -s "$stage/mod.list" ] || die "no production dependencies found"
pack "$stage/mod.list" "$out/$name-node_modules.tar.xz"

log "checksums"
files=("$name.tar.xz" "$name-node_modules.tar.xz")
(cd "$out" && sha256sum "${files[@]}" >SHA256SUMS)
(
  cd "$out"
  for f in "${files[@]}"; do
    printf 'DIST %s %s BLAKE2B %s SHA512 %s\n' "$f" "$(stat -c %s "$f")" \
      "$(b2sum "$f" | cut -d' ' -f1)" "$(sha512sum "$f" | cut -d' ' -f1)"
  done >Manifest
)

# The file names an ebuild's SRC_URI fetches ("URL -> NAME" renames), from its global scope
# with the eclass functions it calls there stubbed out.
src_uri_files() { # EBUILD PN PV
  # shellcheck disable=SC2016 # the inner script expands its own variables
  env -i PATH="$PATH" bash -c '
    inherit() { :; }; command_not_found_handle() { return 0; }
    PN=$2 PV=$3 P=$2-$3 WORKDIR=/w
    source "$1" >/dev/null 2>&1 || exit 1
    read -r -d "" -a u <<<"${SRC_URI:-}"
    for ((i = 0; i < ${#u[@]}; i++)); do
      case ${u[i]} in
        "->") printf "%s\n" "${u[i + 1]}"; ((i++)) ;;
        *"?"|"("|")") ;;
        *) [ "${u[i + 1]:-}" = "->" ] || printf "%s\n" "${u[i]##*/}" ;;
      esac
    done' sh "$@"
}
manifests=()
if [ -n "$overlay" ]; then
  # The commit's release ebuilds say which artefacts each package fetches.
  for eb in "$src"/ebuilds/*/*/*-"$version".ebuild; do
    [ -f "$eb" ] || continue
    pkg=${eb#"$src/ebuilds/"}; pkg=${pkg%/*}
    pn=${pkg#*/}
    [ "$(basename "$eb")" = "$pn-$version.ebuild" ] || continue
    mapfile -t wanted < <(src_uri_files "$eb" "$pn" "$version") || die "cannot read SRC_URI of $pkg"
    lines=()
    for w in "${wanted[@]}"; do
      l=$(awk -v f="$w" '$2 == f' "$out/Manifest")
      [ -n "$l" ] || die "$pkg-$version fetches $w, which this release does not make"
      lines+=("$l")
    done
    [ ${#lines[@]} -gt 0 ] || continue
    mkdir -p "$overlay/$pkg"
    m=$overlay/$pkg/Manifest
    # Keep the lines of other files (older releases); replace ours.
    {
      [ -f "$m" ] && awk 'NR == FNR { mine[$2] = 1; next } !($2 in mine)' <(printf '%s\n' "${lines[@]}") "$m"
      printf '%s\n' "${lines[@]}"
    } | LC_ALL=C sort -k2,2 -u >"$m.new" && mv "$m.new" "$m"
    manifests+=("$m")
  done
fi
for f in "${files[@]}" SHA256SUMS Manifest; do
  printf '%s\n' "$out/$f"
done
for m in "${manifests[@]}"; do printf '%s\n' "$m"; done
if [ ${#manifests[@]} -gt 0 ]; then
  log "done: wrote ${manifests[*]#"$ROOT/"}; upload the two tarballs to STEVED_RELEASE_BASE_URI/v$version/ (ebuilds/README.md) and commit the Manifests"
else
  log "done: no ebuild of version $version in the overlay${overlay:+ ($overlay)}, so no Manifest written there"
fi
