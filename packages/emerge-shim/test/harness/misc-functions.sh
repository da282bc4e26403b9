#!/usr/bin/env bash
# A stand-in for Portage's bin/misc-functions.sh for the emerge-shim tests: run with
# EBUILD_PHASE unset and MISC_FUNCTIONS_ARGS set to the commands to run (Portage's
# MiscFunctionsProcess does both), after a phase failed (die_hooks) or after the install phase
# (install_qa_check install_symlink_html_docs install_hooks). See lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1

export EBUILD_MASTER_PID=${BASHPID}
trap 'exit 1' SIGTERM

die_hooks() {
	# die() already ran them in the failing phase.
	[[ -f ${PORTAGE_BUILDDIR}/.die_hooks ]] && return
	local cmd
	for cmd in ${EBUILD_DEATH_HOOKS-}; do
		"${cmd}" >&2
	done
	: > "${PORTAGE_BUILDDIR}/.die_hooks"
}

# The checks themselves are not the subject; a test may hold them until it opens a gate.
install_qa_check() {
	[[ -n ${STEVED_TEST_QA_GATE-} ]] || return 0
	: > "${T}/qa-running"
	while [[ ! -e ${STEVED_TEST_QA_GATE} ]]; do sleep 0.05; done
}
install_symlink_html_docs() { :; }
install_hooks() { :; }

[[ -f ${T}/environment ]] && { source "${T}/environment" || exit 1; }
__source_all_bashrcs
for x in ${MISC_FUNCTIONS_ARGS}; do
	"${x}"
done
