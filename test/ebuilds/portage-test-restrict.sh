#!/usr/bin/env bash
# When does real Portage run the overlay's test phases? The IUSE, RESTRICT and PROPERTIES that
# the overlay's ebuilds end up with (read from their global scope; for the pytest plugin plus
# what distutils_enable_tests adds, IUSE test and RESTRICT "!test? ( test )") are put into
# tiny ebuilds of a private Portage prefix whose src_test leaves a mark, and emerge from PyPI
# merges them three times:
#   FEATURES=test                           no test phase runs (privileged tests not allowed)
#   FEATURES=test ALLOW_TEST=privileged     the live steved and the plugin run theirs;
#                                           the release steved not (its tarballs have no runner)
#   ALLOW_TEST=privileged, no FEATURES=test nothing runs
#
#   portage-test-restrict.sh ROOT PORTAGE_VERSION
#
# Needs root and .venv-portage-PORTAGE_VERSION (scripts/setup.sh). Prints "ok - ..." /
# "not ok - ..." lines; exits 1 if any check failed.
# shellcheck disable=SC2016 # inner scripts expand their own variables
set -uo pipefail
ROOT=${1:?usage: portage-test-restrict.sh ROOT PORTAGE_VERSION}
VER=${2:?usage: portage-test-restrict.sh ROOT PORTAGE_VERSION}
V=$ROOT/.venv-portage-$VER
failed=0
ok() { echo "ok - Portage $VER: $1"; }
notok() {
  failed=1; echo "not ok - Portage $VER: $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then tail -n 20 "$2" | sed 's/^/    # /'; fi
}
if [ ! -x "$V/bin/emerge" ]; then notok "$V/bin/emerge exists (scripts/setup.sh)"; exit 1; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/steved-portage-restrict.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The test-control variables of an ebuild's global scope, as Portage would see them.
meta() { # EBUILD PN PV
  env -i PATH="$PATH" bash -c '
    inherit() { :; }; command_not_found_handle() { return 0; }
    distutils_enable_tests() { IUSE+=" test"; RESTRICT+=" !test? ( test )"; }
    PN=$2 PV=$3 P=$2-$3 WORKDIR=/w
    source "$1" >/dev/null 2>&1 || exit 1
    printf "IUSE=\"%s\"\nRESTRICT=\"%s\"\nPROPERTIES=\"%s\"\n" "${IUSE:-}" "${RESTRICT:-}" "${PROPERTIES:-}"' sh "$@"
}
O=$ROOT/ebuilds
STEVED_V=$(node -p 'require(process.argv[1]).version' "$ROOT/packages/steved/package.json")
declare -A SRC=(
  [steved-live]="$O/dev-build/steved/steved-9999.ebuild steved 9999"
  [steved-release]="$O/dev-build/steved/steved-$STEVED_V.ebuild steved $STEVED_V"
  [plugin-live]="$O/dev-python/pytest-steved-jobserver/pytest-steved-jobserver-9999.ebuild pytest-steved-jobserver 9999"
)

P=$work/prefix R=$work/prefix/var/db/repos/gentoo
mkdir -p "$P/etc/portage/repos.conf" "$R/profiles/default" "$R/metadata" "$P/var/tmp" "$P/share"
ln -s "$V/share/portage" "$P/share/portage"
echo gentoo >"$R/profiles/repo_name"
echo app-misc >"$R/profiles/categories"
echo amd64 >"$R/profiles/arch.list"
printf 'masters =\nthin-manifests = true\nprofile-formats = portage-2\n' >"$R/metadata/layout.conf"
echo 8 >"$R/profiles/default/eapi"
printf 'ARCH="amd64"\nACCEPT_KEYWORDS="amd64"\nELIBC="glibc"\nKERNEL="linux"\n' >"$R/profiles/default/make.defaults"
ln -s "$R/profiles/default" "$P/etc/portage/make.profile"
printf '[DEFAULT]\nmain-repo = gentoo\n\n[gentoo]\nlocation = %s\n' "$R" >"$P/etc/portage/repos.conf/gentoo.conf"
for name in "${!SRC[@]}"; do
  read -r eb pn pv <<<"${SRC[$name]}"
  if ! lines=$(meta "$eb" "$pn" "$pv"); then notok "the global scope of $eb can be read"; exit 1; fi
  mkdir -p "$R/app-misc/$name"
  {
    printf 'EAPI=8\nDESCRIPTION="%s test controls"\nHOMEPAGE="https://example.org/steved"\n' "$name"
    printf 'LICENSE="MIT"\nSLOT="0"\nKEYWORDS="amd64"\nS=${WORKDIR}\n%s\n' "$lines"
    printf 'src_test() { echo "${PN}" >> "%s/ran"; }\n' "$work"
  } >"$R/app-misc/$name/$name-1.ebuild"
  echo "# $name from ${eb#"$ROOT"/}:"; echo "#   ${lines//$'\n'/$'\n'#   }"
done
atoms=()
for name in "${!SRC[@]}"; do atoms+=("app-misc/$name"); done

# EMERGE_LABEL MAKE_CONF_LINES: merge all three; prints the packages whose src_test ran.
merge() {
  rm -f "$work/ran"
  printf 'FEATURES="${FEATURES} -sandbox -usersandbox -ipc-sandbox -network-sandbox -pid-sandbox -userfetch -usersync -news -merge-sync"\nPORTAGE_TMPDIR="%s"\nCLEAN_DELAY="0"\nEMERGE_WARNING_DELAY="0"\n%s\n' \
    "$P/var/tmp" "$2" >"$P/etc/portage/make.conf"
  env -i PATH="$V/bin:/usr/sbin:/usr/bin:/sbin:/bin" LANG=C.UTF-8 HOME=/root TERM=dumb \
    PORTAGE_OVERRIDE_EPREFIX="$P" PORTAGE_USERNAME=root PORTAGE_GRPNAME=root \
    "$V/bin/emerge" --oneshot --color=n --nospinner "${atoms[@]}" >"$work/$1.log" 2>&1 || return 1
  [ -f "$work/ran" ] || return 0
  sort "$work/ran" | tr '\n' ' ' | sed 's/ $//'
}
check() { # LABEL MAKE_CONF WANT
  local got
  if ! got=$(merge "$1" "$2"); then notok "$1: emerge merged the three packages" "$work/$1.log"; return; fi
  if [ "$got" = "$3" ]; then ok "$1: src_test ran for [${got}]"; else notok "$1: src_test ran for [${got}], want [$3]" "$work/$1.log"; fi
}
check "FEATURES=test" 'FEATURES="${FEATURES} test"' ""
check "FEATURES=test ALLOW_TEST=privileged" $'FEATURES="${FEATURES} test"\nALLOW_TEST="privileged"' "plugin-live steved-live"
check "ALLOW_TEST=privileged without FEATURES=test" 'ALLOW_TEST="privileged"' ""
exit "$failed"
