# shellcheck shell=bash
# The parts of Portage's bash side that the emerge-shim tests need, written for these tests
# from a reading of Portage's bin/ebuild.sh, bin/phase-functions.sh, bin/bashrc-functions.sh,
# bin/isolated-functions.sh and bin/misc-functions.sh (gentoo/portage a20ef27a). What is kept,
# because the bashrc module depends on it:
#   - a phase is `bash ebuild.sh PHASE`; EBUILD_MASTER_PID and a SIGTERM trap are set;
#   - the first phase (setup) sources the bashrc and the ebuild in ebuild.sh itself; later
#     phases first source ${T}/environment (saved after each phase), then source the bashrc
#     again inside the subshell that runs the phase (PORTAGE_BASHRCS_SOURCED is not saved);
#   - pre_/post_ hooks around each phase function; the environment is saved after the phase;
#   - die() runs EBUILD_DEATH_HOOKS in the dying process (stdout to stderr), leaves
#     ${PORTAGE_BUILDDIR}/.die_hooks, and takes the phase down from a subshell;
#   - misc-functions.sh runs with EBUILD_PHASE unset and MISC_FUNCTIONS_ARGS set, sources the
#     environment and the bashrc, and runs die_hooks (skipped when .die_hooks exists) or the
#     post-install checks.
# What is left out: sandbox, ebuild-ipc, EAPI checks, QA interceptors, metadata, the full
# variable filter of the saved environment (only functions and EBUILD_DEATH_HOOKS are saved:
# that is what the module leaves behind).

einfo() { printf ' * %s\n' "$*" >&2; }
ewarn() { printf ' * WARNING: %s\n' "$*" >&2; }
eerror() { printf ' * ERROR: %s\n' "$*" >&2; }

contains_word() { [[ " $2 " == *" $1 "* ]]; }

register_die_hook() {
	local hook
	for hook; do
		[[ -n ${hook} ]] || continue
		contains_word "${hook}" "${EBUILD_DEATH_HOOKS-}" || export EBUILD_DEATH_HOOKS+=" ${hook}"
	done
}

die() {
	set +x
	eerror "${CATEGORY}/${PF} failed (${EBUILD_PHASE-misc} phase): ${*:-(no error message)}"
	local x
	for x in ${EBUILD_DEATH_HOOKS-}; do
		"${x}" "$@"
	done >&2
	: > "${PORTAGE_BUILDDIR}/.die_hooks"
	# From a nested subshell, take the phase process down too.
	if [[ -n ${EBUILD_MASTER_PID-} && ${BASHPID} != "${EBUILD_MASTER_PID}" ]]; then
		kill -s SIGTERM "${EBUILD_MASTER_PID}"
	fi
	exit 1
}

PORTAGE_BASHRCS_SOURCED=0
__source_all_bashrcs() {
	[[ ${PORTAGE_BASHRCS_SOURCED} == 1 ]] && return 0
	PORTAGE_BASHRCS_SOURCED=1
	if [[ -r ${PORTAGE_BASHRC-} && -f ${PORTAGE_BASHRC} ]]; then
		source "${PORTAGE_BASHRC}"
	fi
}

__save_env() {
	declare -f
	[[ -v EBUILD_DEATH_HOOKS ]] && printf 'export EBUILD_DEATH_HOOKS=%q\n' "${EBUILD_DEATH_HOOKS}"
	return 0
}
