#!/usr/bin/env bash
# pkgcheck scan of the overlay (a copy of it), against a stub ::gentoo made here, on a machine
# without Portage. Prints pkgcheck's results; exits 1 if any is error-level, 2 on a usage or
# set-up problem.
#
#   pkgcheck-overlay.sh OVERLAY_DIR [PKGCHECK]
#
# PKGCHECK defaults to .venv-pkgcheck/bin/pkgcheck (pinned in scripts/requirements-pkgcheck.txt,
# installed by scripts/setup.sh). The overlay is copied first: pkgcore and pkgcheck never write
# into it.
#
# The stub ::gentoo holds only what the overlay's ebuilds need to be sourced and resolved:
# profiles (amd64 and arm64, stable), the licenses they name, minimal stand-ins written here
# for the eclasses they inherit and for python-r1, which distutils-r1 inherits (functions that
# do nothing, and the metadata those eclasses add: PYTHON_DEPS, the acct-* deps, distutils'
# test deps and RESTRICT), and one stub ebuild per package they depend on, keyworded on both
# arches. So the checks that read real ::gentoo
# data are left out or weakened: dependencies are resolved against the stubs, not ::gentoo's
# versions, slots and USE flags; eclass-specific checks (PythonCheck, the python_targets
# matching, eclass variable documentation, deprecated eclasses or functions) see stand-ins;
# license groups, global use.desc beyond "test", package.mask and the real profile tree are
# absent; checks that need the network (--net: HOMEPAGE, SRC_URI, metadata.xml remote-ids)
# or git history (--commits) are not run.
set -uo pipefail
overlay=${1:?usage: pkgcheck-overlay.sh OVERLAY_DIR [PKGCHECK]}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
pkgcheck=${2:-$ROOT/.venv-pkgcheck/bin/pkgcheck}
[ -f "$overlay/profiles/repo_name" ] || { echo "pkgcheck-overlay: $overlay is not an overlay (no profiles/repo_name)" >&2; exit 2; }
[ -x "$pkgcheck" ] || { echo "pkgcheck-overlay: no $pkgcheck (run scripts/setup.sh)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/steved-pkgcheck.XXXXXX")
trap 'rm -rf "$work"' EXIT
G=$work/gentoo O=$work/overlay C=$work/portage
cp -a "$overlay" "$O"
rm -rf "$O/metadata/md5-cache"
mkdir -p "$G"/{metadata,profiles/desc,profiles/base,profiles/default/linux/amd64,profiles/default/linux/arm64,licenses,eclass} "$C"

# --- profiles ------------------------------------------------------------------------------
echo gentoo >"$G/profiles/repo_name"
cat >"$G/metadata/layout.conf" <<'EOF'
repo-name = gentoo
masters =
thin-manifests = true
sign-manifests = false
manifest-hashes = BLAKE2B SHA512
cache-formats = md5-dict
profile-formats = portage-2
EOF
printf 'amd64\narm64\n' >"$G/profiles/arch.list"
printf 'amd64 stable\narm64 stable\n' >"$G/profiles/arches.desc"
printf 'amd64 default/linux/amd64 stable\narm64 default/linux/arm64 stable\n' >"$G/profiles/profiles.desc"
printf 'test - Enable dependencies and/or preparations necessary to run tests\n' >"$G/profiles/use.desc"
printf 'python3_12 - Build with Python 3.12\n' >"$G/profiles/desc/python_targets.desc"
printf '8\n' >"$G/profiles/eapi"
cat >"$G/profiles/base/make.defaults" <<'EOF'
USE_EXPAND="PYTHON_TARGETS"
USE_EXPAND_UNPREFIXED="ARCH"
USE_EXPAND_IMPLICIT="ARCH ELIBC KERNEL"
USE_EXPAND_VALUES_ARCH="amd64 arm64"
USE_EXPAND_VALUES_ELIBC="glibc musl"
USE_EXPAND_VALUES_KERNEL="linux"
IUSE_IMPLICIT="prefix prefix-guest prefix-stack"
ELIBC="glibc"
KERNEL="linux"
PYTHON_TARGETS="python3_12"
EOF
for a in amd64 arm64; do
  printf '../../../base\n' >"$G/profiles/default/linux/$a/parent"
  printf 'ARCH="%s"\nACCEPT_KEYWORDS="%s"\n' "$a" "$a" >"$G/profiles/default/linux/$a/make.defaults"
done
for l in GPL-2 GPL-2+ ISC MIT; do printf 'Stand-in for the %s license text.\n' "$l" >"$G/licenses/$l"; done

# --- eclass stand-ins: what the overlay calls, and the metadata the real ones add ---------------
eclass() { cat >"$G/eclass/$1.eclass"; }
eclass linux-info <<'EOF'
# Stand-in for the steved overlay's pkgcheck test.
check_extra_config() { :; }
linux_config_exists() { return 1; }
linux_chkconfig_present() { return 1; }
EOF
eclass python-any-r1 <<'EOF'
# Stand-in for the steved overlay's pkgcheck test.
PYTHON_DEPS="dev-lang/python:3.12"
python-any-r1_pkg_setup() { :; }
EXPORT_FUNCTIONS pkg_setup
EOF
eclass systemd <<'EOF'
# Stand-in for the steved overlay's pkgcheck test.
systemd_get_systemunitdir() { echo /usr/lib/systemd/system; }
EOF
eclass toolchain-funcs <<'EOF'
# Stand-in for the steved overlay's pkgcheck test.
tc-export() { :; }
EOF
eclass udev <<'EOF'
# Stand-in for the steved overlay's pkgcheck test.
get_udevdir() { echo /usr/lib/udev; }
udev_reload() { :; }
EOF
eclass git-r3 <<'EOF'
# Stand-in for the steved overlay's pkgcheck test.
PROPERTIES+=" live"
git-r3_src_unpack() { :; }
EXPORT_FUNCTIONS src_unpack
EOF
eclass acct-group <<'EOF'
# Stand-in for the steved overlay's pkgcheck test.
SLOT="0"
KEYWORDS="amd64 arm64"
S=${WORKDIR}
acct-group_pkg_preinst() { :; }
EXPORT_FUNCTIONS pkg_preinst
EOF
eclass acct-user <<'EOF'
# Stand-in for the steved overlay's pkgcheck test.
SLOT="0"
KEYWORDS="amd64 arm64"
S=${WORKDIR}
acct-user_add_deps() {
	local g
	for g in "${ACCT_USER_GROUPS[@]}"; do
		RDEPEND+=" acct-group/${g}"
		DEPEND+=" acct-group/${g}"
	done
}
acct-user_pkg_preinst() { :; }
EXPORT_FUNCTIONS pkg_preinst
EOF
eclass python-r1 <<'EOF'
# Stand-in for the steved overlay's pkgcheck test.
IUSE="python_targets_python3_12"
REQUIRED_USE="|| ( python_targets_python3_12 )"
PYTHON_USEDEP="python_targets_python3_12(-)?"
PYTHON_DEPS="python_targets_python3_12? ( dev-lang/python:3.12 )"
EOF
eclass distutils-r1 <<'EOF'
# Stand-in for the steved overlay's pkgcheck test.
inherit python-r1
RDEPEND="${PYTHON_DEPS}"
BDEPEND="${PYTHON_DEPS}"
distutils_enable_tests() {
	IUSE+=" test"
	RESTRICT+=" !test? ( test )"
	BDEPEND+=" test? ( dev-python/pytest[${PYTHON_USEDEP}] dev-python/pytest-xdist[${PYTHON_USEDEP}] )"
}
epytest() { :; }
distutils-r1_src_compile() { :; }
distutils-r1_src_install() { :; }
EXPORT_FUNCTIONS src_compile src_install
EOF

# --- stub packages the overlay depends on ---------------------------------------------------
stub() { # CAT/PN-PV [SLOT] [IUSE] [INHERIT-LINES]
  local cpv=$1 cat pn
  cat=${cpv%%/*}; pn=${cpv#*/}; pn=${pn%-[0-9]*}
  mkdir -p "$G/$cat/$pn"
  grep -qx "$cat" "$G/profiles/categories" 2>/dev/null || echo "$cat" >>"$G/profiles/categories"
  {
    printf 'EAPI=8\n%s\nDESCRIPTION="Stand-in for the steved overlay pkgcheck test"\n' "${4:-}"
    printf 'HOMEPAGE="https://www.gentoo.org/"\nLICENSE="MIT"\nSLOT="%s"\nKEYWORDS="amd64 arm64"\nIUSE="%s"\n' "${2:-0}" "${3:-}"
  } >"$G/$cat/$pn/${cpv#*/}.ebuild"
}
stub sys-fs/fuse-3.16.2 3/3
stub sys-fs/fuse-common-3.10.4-r2
stub net-libs/nodejs-22.12.0 0/22 +npm
stub sys-apps/portage-3.0.83
stub virtual/pkgconfig-3
stub dev-build/make-4.4.1-r100
stub dev-build/steve-0.1.2  # blocked by dev-build/steved (both install /usr/bin/stevie)
stub dev-lang/python-3.12.8 3.12
for p in pytest-8.3.4 pytest-xdist-3.6.1 pytest-jobserver-1.0.0; do stub "dev-python/$p" 0 python_targets_python3_12; done
for p in acct-group/jobserver-0:556 acct-group/cuse-0:403; do
  stub "${p%:*}" 0 "" "$(printf 'inherit acct-group\nACCT_GROUP_ID=%s' "${p#*:}")"
  sed -i '/^SLOT=\|^KEYWORDS=\|^LICENSE=/d' "$G/${p%%-0:*}/$(basename "${p%:*}").ebuild"
done
# Every category the overlay uses exists in the master too.
cat "$O/profiles/categories" 2>/dev/null >>"$G/profiles/categories"
find "$O" -mindepth 2 -maxdepth 2 -type d ! -path '*/profiles/*' ! -path '*/metadata/*' ! -path '*/.git/*' |
  sed "s,^$O/,,; s,/.*,," >>"$G/profiles/categories"
sort -u -o "$G/profiles/categories" "$G/profiles/categories"

# --- a portage configuration naming both repositories ------------------------------------
cat >"$C/repos.conf" <<EOF
[DEFAULT]
main-repo = gentoo

[gentoo]
location = $G

[$(cat "$O/profiles/repo_name")]
location = $O
EOF
: >"$C/make.conf"
ln -s "$G/profiles/default/linux/amd64" "$C/make.profile"

cd "$work" || exit 2
"$pkgcheck" --config "$C" scan --cache-dir "$work/cache" --exit error -R FancyReporter -r "$O" >"$work/out" 2>"$work/err"
rc=$?
cat "$work/out"
cat "$work/err" >&2
case $rc in
  0) echo "pkgcheck-overlay: no error-level result" ;;
  1) echo "pkgcheck-overlay: error-level results above" ;;
  *) echo "pkgcheck-overlay: pkgcheck failed (status $rc)"; rc=2 ;;
esac
exit "$rc"
