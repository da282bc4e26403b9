#!/usr/bin/env bash
# Run phases of an ebuild the way Portage would, on a machine without Portage: just enough of
# ebuild.sh and the eclasses the overlay inherits to execute the ebuild's own code for real
# (its src_unpack, src_compile and src_install call the project's scripts; pkg_postinst
# prints its messages). Eclass functions that only compute paths or talk to Portage are
# stand-ins, each a line below; nothing here decides whether a test passes. Stricter than
# Portage in one way: a phase function that returns non-zero counts as a failure.
#
#   mock-portage.sh EBUILD PHASE...
#
# PHASE may also be "print-A", which prints A (the file names SRC_URI fetches), one a line.
#
# Environment:
#   MOCK_BASE      scratch directory: work/, temp/, image/ (= ${D}) are made under it (required)
#   MOCK_D         another directory for ${D}, e.g. to install a second time with other USE
#   DISTDIR        where SRC_URI's files are (release ebuilds)
#   MOCK_EGIT_REPO what git-r3 clones (live ebuilds)
#   MOCK_USE       enabled USE flags, space separated
#   MOCK_LIBDIR    get_libdir's answer (default lib)
#   MOCK_KCONFIG   a kernel .config for linux_chkconfig_present (default: none found)
#   ROOT           as in Portage (default empty, i.e. /)
# Output: ebuild messages as "elog: ...", "ewarn: ..."; exit 1 after "die: ..." on die.

ebuild=$(readlink -f "${1:?usage: mock-portage.sh EBUILD PHASE...}")
shift
[[ -f ${ebuild} ]] || { echo "mock-portage: no ebuild ${ebuild}" >&2; exit 2; }
: "${MOCK_BASE:?MOCK_BASE must name a scratch directory}"

# --- the variables Portage sets ----------------------------------------------------
PN=$(basename "$(dirname "${ebuild}")")
CATEGORY=$(basename "$(dirname "$(dirname "${ebuild}")")")
P=$(basename "${ebuild}" .ebuild)
PV=${P#"${PN}"-}
PF=${P}
export PN CATEGORY P PV PF
export WORKDIR=${MOCK_BASE}/work T=${MOCK_BASE}/temp D=${MOCK_D:-${MOCK_BASE}/image}/
export EPREFIX="" BROOT="" ESYSROOT="" SYSROOT=""
export ROOT=${ROOT:-} ED=${D} FILESDIR=${ebuild%/*}/files DISTDIR=${DISTDIR:-${MOCK_BASE}/distfiles}
export EROOT=${ROOT}${EPREFIX}
mkdir -p "${WORKDIR}" "${T}" "${D}"
S=${WORKDIR}/${P}
INHERITED=""

# --- ebuild.sh and eclass stand-ins -----------------------------------------------------
die() { echo "die: ${*:-(no message)}"; exit 1; }
einfo() { echo "einfo: $*"; }
elog() { echo "elog: $*"; }
ewarn() { echo "ewarn: $*"; }
eerror() { echo "eerror: $*"; }
inherit() { INHERITED+=" $*"; }
has() { local x=$1; shift; [[ " $* " == *" ${x} "* ]]; }
# MOCK_USE and A are space-separated lists, as in Portage: they are split on purpose.
# shellcheck disable=SC2086
use() {
	local f=${1#!}
	if [[ " ${IUSE//+/} " != *" ${f} "* ]]; then die "use ${f}: not in IUSE"; fi
	if [[ $1 == !* ]]; then ! has "${f}" ${MOCK_USE:-}; else has "${f}" ${MOCK_USE:-}; fi
}
usex() { if use "$1"; then echo "${2-yes}"; else echo "${3-no}"; fi; }
get_libdir() { echo "${MOCK_LIBDIR:-lib}"; }
tc-export() { :; }
addwrite() { :; }
eapply_user() { :; }
python-any-r1_pkg_setup() { export EPYTHON=python3 PYTHON; PYTHON=$(command -v python3); }
systemd_get_systemunitdir() { echo "${EPREFIX}/usr/lib/systemd/system"; }
get_udevdir() { echo "${EPREFIX}/usr/lib/udev"; }
udev_reload() { echo "mock: udev_reload"; }
check_extra_config() { echo "mock: check_extra_config CONFIG_CHECK=${CONFIG_CHECK} WARNING_CUSE=${WARNING_CUSE-}"; }
linux_config_exists() { [[ -n ${MOCK_KCONFIG:-} && -f ${MOCK_KCONFIG} ]]; }
linux_chkconfig_present() { grep -Eq "^CONFIG_$1=[ym]" "${MOCK_KCONFIG}"; }
git-r3_src_unpack() {
	git clone -q "${MOCK_EGIT_REPO:?MOCK_EGIT_REPO names the repository git-r3 clones}" \
		"${EGIT_CHECKOUT_DIR:-${WORKDIR}/${P}}" || die "git clone failed"
}
unpack() {
	local a
	for a in "$@"; do
		echo ">>> Unpacking ${a} to ${PWD}"
		tar -xf "${DISTDIR}/${a}" || die "unpack ${a} failed"
	done
}
einstalldocs() {
	local d
	for d in "${DOCS[@]}"; do
		install -D -m 0644 "${d}" "${ED}/usr/share/doc/${PF}/${d##*/}" || die "einstalldocs ${d}"
	done
}

# --- the ebuild -----------------------------------------------------------------------------
# shellcheck source=/dev/null
source "${ebuild}" || die "sourcing ${ebuild} failed"
[[ ${EAPI} == 8 ]] || die "EAPI=${EAPI}: this stand-in knows EAPI 8 only"
# A: SRC_URI's file names ("URL -> NAME" renames the file).
A=""
read -r -d '' -a uri <<<"${SRC_URI:-}"
for ((i = 0; i < ${#uri[@]}; i++)); do
	if [[ ${uri[i]} == "->" ]]; then A="${A% *} ${uri[i + 1]}"; ((i++)); continue; fi
	A+=" ${uri[i]##*/}"
done
export A

# shellcheck disable=SC2086
default_src_unpack() { if [[ -n ${A// /} ]]; then unpack ${A}; fi; }
default_src_prepare() { eapply_user; }
default_src_compile() { :; }
default_src_install() { :; }

for phase in "$@"; do
	if [[ ${phase} == print-A ]]; then
		# shellcheck disable=SC2086
		printf '%s\n' ${A}
		continue
	fi
	echo ">>> ${phase}"
	case ${phase} in
		src_unpack) cd "${WORKDIR}" || die ;;
		src_*) cd "${S}" || die "S=${S} does not exist" ;;
		*) cd "${T}" || die ;;
	esac
	if declare -F "${phase}" >/dev/null; then
		if [[ ${phase} == src_* ]]; then
			# "default" inside a phase means that phase's default.
			eval "default() { default_${phase}; }"
		fi
		"${phase}" || die "${phase} returned $?"
	elif declare -F "default_${phase}" >/dev/null; then
		"default_${phase}"
	fi
done
