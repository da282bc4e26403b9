# shellcheck shell=bash
# steved-jobserver.bashrc: a Portage bashrc module of steved's emerge-shim.
#
#  * What FEATURES=jobserver-token does, for any Portage: each package job holds one token of
#    the system jobserver from its first phase (setup) until its build is over (after the
#    install checks), so the make inside it runs its implicit job on a slot that is paid for.
#    Portage >= 3.0.74 with FEATURES=jobserver-token does this itself; the shim then takes no
#    second token and says so once.
#  * JOBSERVER_TOKENS=N (package.env): the job holds N tokens (for builds that run N things
#    without asking the jobserver).
#  * JOBSERVER_MAX_JOBS=N (package.env): this build's processes run at most N jobs at once,
#    through a steved process group; every other build keeps the rest of the pool.
#
# Enable it in /etc/portage/bashrc:
#     if [[ -r /usr/share/steved/steved-jobserver.bashrc ]]; then
#         source /usr/share/steved/steved-jobserver.bashrc
#         steved_jobserver_hook
#     fi
#
# Sourcing this file only defines functions named steved_jobserver_*. steved_jobserver_hook
# does nothing, silently, outside a package's build phases, when MAKEFLAGS names no
# jobserver, and when the helper is not installed. It never fails a build: trouble
# with the jobserver is an ewarn, and the phase goes on.
#
# The helper is the program STEVED_JOBSERVER_HELPER names (default: steved-emerge-shim, found
# on PATH); it starts one small holder process per job (see the package README).

# Call once from /etc/portage/bashrc; Portage sources that file in every phase.
steved_jobserver_hook() {
	# Builtins only until this is known to be a build step: the depend phase sources the
	# bashrc with PATH=/dev/null, where any external command dies.
	local phase=${EBUILD_PHASE-} misc=" ${MISC_FUNCTIONS_ARGS-} "
	case ${phase} in
		setup|unpack|prepare|configure|compile|test|install)
			[[ ${misc} == "  " ]] || return 0 ;;
		"")
			# misc-functions.sh: the post-install checks (the build's last step), or die hooks.
			[[ ${misc} == *" install_qa_check "* || ${misc} == *" die_hooks "* ]] || return 0 ;;
		*)
			return 0 ;;
	esac
	steved_jobserver_wanted || return 0
	[[ -n ${phase} ]] && steved_jobserver_emake_guard
	# Runs when a phase dies (die) and when Portage runs die hooks after any failed phase.
	if declare -F register_die_hook >/dev/null; then
		register_die_hook steved_jobserver_die_hook
	fi
	if [[ -n ${phase} ]]; then
		steved_jobserver_run phase --pid "$$"
	elif [[ ${misc} == *" install_qa_check "* ]]; then
		# MISC_FUNCTIONS_ARGS is a shell variable of misc-functions.sh, not exported: the
		# helper cannot see it, so it is told what this step is.
		steved_jobserver_run built --pid "$$"
	fi
}

# Portage < 3.0.72 (before the fix for Gentoo bug 692576) hands MAKEOPTS to make even when
# MAKEFLAGS names a jobserver, and `make -jN` leaves the pool for a private one of N. There,
# emake gets MAKEOPTS without -j; the phase keeps the user's MAKEOPTS for the ebuilds that read
# N from it (epytest's EPYTEST_JOBS fallback, cargo).
steved_jobserver_emake_guard() {
	local helper=${PORTAGE_BIN_PATH-}/ebuild-helpers/emake line
	[[ -r ${helper} ]] || return 0
	declare -F emake >/dev/null && return 0
	while IFS= read -r line; do
		[[ ${line} == *"unset MAKEOPTS"* ]] && return 0
	done < "${helper}"
	# shellcheck disable=SC2317 # called by the ebuild
	emake() {
		MAKEOPTS=$(steved_jobserver_without_j "${MAKEOPTS-}") command emake "$@"
	}
}

# Print the words of $1 without -jN, -j N, -j, --jobs=N, --jobs N, --jobs.
steved_jobserver_without_j() {
	local -a out=()
	local w skip=0
	for w in $1; do
		if (( skip )); then
			skip=0
			[[ ${w} =~ ^[0-9]+$ ]] && continue
		fi
		if [[ ${w} == -j || ${w} == --jobs ]]; then
			skip=1
		elif ! [[ ${w} =~ ^-j[0-9]+$ || ${w} == --jobs=* ]]; then
			out+=("${w}")
		fi
	done
	printf '%s\n' "${out[*]}"
}

# Registered with register_die_hook: the job failed; its token goes back once its processes are gone.
steved_jobserver_die_hook() {
	steved_jobserver_wanted || return 0
	steved_jobserver_run die --pid "$$"
}

# True when MAKEFLAGS names a jobserver and the helper exists.
steved_jobserver_wanted() {
	[[ " ${MAKEFLAGS-} ${CARGO_MAKEFLAGS-} ${MFLAGS-} " == *" --jobserver-auth="* ]] || return 1
	steved_jobserver_helper >/dev/null
}

# Print the helper's path; false when it is not installed.
steved_jobserver_helper() {
	local helper=${STEVED_JOBSERVER_HELPER:-steved-emerge-shim}
	if [[ ${helper} == */* ]]; then
		[[ -x ${helper} ]] || return 1
	else
		helper=$(type -P "${helper}") || return 1
	fi
	printf '%s\n' "${helper}"
}

# Run the helper; its "info TEXT" / "warn TEXT" lines become einfo / ewarn. The helper is a
# direct child of the shell that runs this (exec: no subshell of the process substitution in
# between, whatever bash does by itself): it names that shell to steved as "its parent", which
# is right also inside FEATURES=pid-sandbox's pid namespace, where $$ is not steved's pid.
steved_jobserver_run() {
	local helper line
	helper=$(steved_jobserver_helper) || return 0
	while IFS= read -r line || [[ -n ${line} ]]; do
		case ${line} in
			"info "*) steved_jobserver_say einfo "${line#info }" ;;
			"warn "*) steved_jobserver_say ewarn "${line#warn }" ;;
		esac
	done < <(exec "${helper}" "$@")
	return 0
}

steved_jobserver_say() {
	if declare -F "$1" >/dev/null; then
		"$1" "$2"
	else
		printf ' * %s\n' "$2" >&2
	fi
}
