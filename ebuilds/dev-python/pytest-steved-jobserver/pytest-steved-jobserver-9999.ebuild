# Copyright 2026 steved authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DISTUTILS_USE_PEP517=setuptools
PYTHON_COMPAT=( python3_{11..14} )

inherit distutils-r1

DESCRIPTION="pytest plugin (-p jobserver): each pytest-xdist test holds a jobserver token"
HOMEPAGE="https://github.com/steved-jobserver/steved"
# Where the release tarballs (scripts/release.sh) are published: the one place to
# change for another host (ebuilds/README.md).
STEVED_RELEASE_BASE_URI="https://github.com/steved-jobserver/steved/releases/download"

# The plugin lives in the steved repository and release tarball.
if [[ ${PV} == 9999 ]]; then
	inherit git-r3
	EGIT_REPO_URI="https://github.com/steved-jobserver/steved.git"
	S=${WORKDIR}/${P}/packages/pytest-bridge
else
	SRC_URI="${STEVED_RELEASE_BASE_URI}/v${PV}/steved-${PV}.tar.xz"
	S=${WORKDIR}/steved-${PV}/packages/pytest-bridge
	KEYWORDS="~amd64 ~arm64"
fi

LICENSE="GPL-2+"
SLOT="0"
# The tests run pytest-xdist workers against a steved serving a FUSE file:
# root and /dev/fuse. They run with FEATURES=test where ALLOW_TEST="privileged"
# lifts this RESTRICT (test_privileged), and nowhere else.
RESTRICT="test"
PROPERTIES="test? ( test_privileged )"

# Tokens are taken through "jobclient agent", from dev-build/steved.
# dev-python/pytest-jobserver registers the same pytest11 entry point.
RDEPEND="
	dev-build/steved
	dev-python/pytest[${PYTHON_USEDEP}]
	!dev-python/pytest-jobserver
"
BDEPEND="
	test? ( dev-build/steved )
"

EPYTEST_PLUGINS=( "${PN}" pytest-xdist )
EPYTEST_PLUGIN_LOAD_VIA_ENV=1
distutils_enable_tests pytest

python_test() {
	addwrite /dev/fuse
	[[ -w /dev/fuse ]] ||
		die "Testing ${PN} requires root and /dev/fuse (FEATURES=-userpriv)"
	epytest
}

pkg_postinst() {
	elog "pytest loads this plugin with -p jobserver. For the test phases of"
	elog "ebuilds that use pytest-xdist, add to /etc/portage/make.conf:"
	elog '  EPYTEST_FLAGS="-p jobserver"'
	elog "(epytest adds -p jobserver by itself only for dev-python/pytest-jobserver)."
}
