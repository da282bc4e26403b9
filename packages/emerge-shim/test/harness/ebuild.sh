#!/usr/bin/env bash
# A stand-in for Portage's bin/ebuild.sh for the emerge-shim tests: `bash ebuild.sh PHASE`,
# with the environment fake-emerge.js builds (what doebuild sets: CATEGORY, PF, P,
# PORTAGE_BUILDDIR, T, EBUILD, EBUILD_PHASE, EBUILD_PHASE_FUNC, EMERGE_FROM, PORTAGE_BASHRC,
# FEATURES, MAKEFLAGS, ...). See lib.sh for what is faithful and what is left out.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1

export EBUILD_MASTER_PID=${BASHPID}
trap 'exit 1' SIGTERM

__phase_with_hooks() {
	local x
	for x in "pre_$1" "$1" "post_$1"; do
		# As in Portage, a phase function fails only by calling die.
		if declare -F "${x}" >/dev/null; then
			"${x}"
		fi
	done
}

__ebuild_main() {
	export EBUILD_MASTER_PID=${BASHPID}
	trap 'exit 1' SIGTERM
	__source_all_bashrcs
	case $1 in
		setup) __phase_with_hooks pkg_setup ;;
		unpack|prepare|configure|compile|test|install) __phase_with_hooks "src_$1" ;;
		preinst|postinst) __phase_with_hooks "pkg_$1" ;;
		clean) ;;
		*) echo "Unrecognized arg '$1'" >&2; exit 1 ;;
	esac
	if [[ $1 != clean ]]; then
		__save_env > "${T}/environment" || die "saving the environment failed"
	fi
}

# Later phases continue from the environment the previous phase saved.
if [[ ${EBUILD_PHASE} != clean ]] && ! [[ ${EBUILD_PHASE} == setup && ${EMERGE_FROM} == ebuild ]] && [[ -f ${T}/environment ]]; then
	source "${T}/environment" || die "error sourcing environment"
fi

# The first phase (or one without a saved environment) sources the bashrc and the ebuild here.
if [[ ${EBUILD_PHASE} != clean ]]; then
	if [[ ${EBUILD_PHASE} == setup && ${EMERGE_FROM} == ebuild ]] || [[ ! -f ${T}/environment ]]; then
		__source_all_bashrcs
		source "${EBUILD}" || die "error sourcing ebuild"
	fi
fi

(
	__ebuild_main "${EBUILD_PHASE}"
	exit 0
)
exit $?
