# Copyright 2026 steved authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

PYTHON_COMPAT=( python3_{11..14} )

inherit linux-info python-any-r1 systemd toolchain-funcs udev

DESCRIPTION="System-wide GNU make jobserver with per-process token accounting"
HOMEPAGE="https://github.com/steved-jobserver/steved"
# Where the release tarballs (scripts/release.sh) are published: the one place to
# change for another host (ebuilds/README.md).
STEVED_RELEASE_BASE_URI="https://github.com/steved-jobserver/steved/releases/download"

if [[ ${PV} == 9999 ]]; then
	inherit git-r3
	EGIT_REPO_URI="https://github.com/steved-jobserver/steved.git"
else
	# Made by scripts/release.sh: the source with its JavaScript compiled, and the
	# production node_modules (src_* have no network to run npm).
	SRC_URI="
		${STEVED_RELEASE_BASE_URI}/v${PV}/${P}.tar.xz
		${STEVED_RELEASE_BASE_URI}/v${PV}/${P}-node_modules.tar.xz
	"
	KEYWORDS="~amd64 ~arm64"
fi

# steved, stevectl, jobclient: GPL-2+; in node_modules: @iarna/toml (ISC),
# commander, node-addon-api and node-gyp-build (MIT)
LICENSE="GPL-2+ ISC MIT"
SLOT="0"
IUSE="portage"
if [[ ${PV} == 9999 ]]; then
	# The suites mount FUSE file systems (root, /dev/fuse) and need the
	# devDependencies (tap, typescript), which only the live ebuild fetches.
	# Portage lifts this RESTRICT for test_privileged packages where
	# ALLOW_TEST="privileged" (make.conf): FEATURES=test runs them there, as
	# root, and nowhere else ("!test? ( test )" would run them everywhere).
	IUSE+=" test"
	RESTRICT="test"
	PROPERTIES="test? ( test_privileged )"
else
	# The release tarballs carry the production dependencies only: no test runner.
	RESTRICT="test"
fi

DEPEND="sys-fs/fuse:3="
# steve's package installs /usr/bin/stevie too (and serves /dev/steve): one of the two.
# The addons use N-API (version 8), which does not change with Node.js
# releases: no slot operator. fuse-common gives /dev/cuse to the cuse group.
RDEPEND="
	${DEPEND}
	acct-group/jobserver
	acct-user/steved
	>=net-libs/nodejs-20
	>=sys-fs/fuse-common-3.10.4-r2
	portage? ( sys-apps/portage )
	!dev-build/steve
"
# node-gyp is the copy npm bundles; gyp needs Python.
BDEPEND="
	${PYTHON_DEPS}
	>=net-libs/nodejs-20[npm]
	virtual/pkgconfig
"

DOCS=( README.md docs/control.md )

pkg_pretend() {
	local CONFIG_CHECK="~CUSE"
	local WARNING_CUSE="CONFIG_CUSE is not set: steved will serve a FUSE-mounted file instead of /dev/steve (see below)"
	check_extra_config

	if linux_config_exists && ! linux_chkconfig_present CUSE; then
		ewarn "Without CUSE, steved serves the jobserver as a FUSE-mounted regular file:"
		ewarn '  MAKEFLAGS="-l32 --jobserver-auth=fifo:/run/steved/jobserver"'
		ewarn "GNU make >= 4.4, cargo, Portage, pytest and Gentoo's patched dev-build/ninja"
		ewarn "use it; an unpatched ninja (from pip, say) accepts only FIFOs: run it as"
		ewarn "jobclient-ninja to keep it in the pool."
		ewarn "Under systemd, steved mounts the file as user steved: add"
		ewarn "'user_allow_other' to /etc/fuse.conf, or see steved.service for running it"
		ewarn "as root with --user steved."
	fi
}

pkg_setup() {
	python-any-r1_pkg_setup
}

src_unpack() {
	if [[ ${PV} == 9999 ]]; then
		git-r3_src_unpack
		# A live ebuild may reach the network in src_unpack only: fetch the npm
		# dependencies here, the devDependencies too (typescript, node-gyp, tap).
		cd "${S}" || die
		npm ci --no-audit --no-fund --ignore-scripts || die "npm ci failed"
	else
		default
	fi
}

src_compile() {
	tc-export CC CXX
	local args=( --nodedir="${ESYSROOT}/usr" )
	if [[ ${PV} == 9999 ]]; then
		node_modules/.bin/tsc -b || die "tsc -b failed"
	else
		# The JavaScript comes compiled; node-gyp is the one npm bundles.
		args+=( --node-gyp="${BROOT}/usr/$(get_libdir)/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js" )
	fi
	bash scripts/build-addons.sh "${args[@]}" || die "building the native addons failed"
}

src_test() {
	[[ -x node_modules/.bin/tap ]] ||
		die "The tests need the devDependencies: use ${CATEGORY}/${PN}-9999"
	addwrite /dev/fuse
	[[ -w /dev/fuse ]] ||
		die "Testing steved requires root and /dev/fuse (FEATURES=-userpriv)"
	local -x STEVED_ROOT=${S} TS_NODE_PROJECT=${S}/tsconfig.test.json
	local -x STEVED_MAKE44
	STEVED_MAKE44=$(type -P make) || die
	node_modules/.bin/tap --reporter=tap packages/*/test/*.test.ts || die "tests failed"
}

src_install() {
	DESTDIR="${D}" bash scripts/install.sh \
		--prefix="${EPREFIX}/usr" \
		--libdir="${EPREFIX}/usr/$(get_libdir)" \
		--sysconfdir="${EPREFIX}/etc" \
		--systemdunitdir="$(systemd_get_systemunitdir)" \
		--udevrulesdir="$(get_udevdir)/rules.d" \
		"$(usex portage --with-emerge-shim --without-emerge-shim)" \
		|| die "scripts/install.sh failed"
	einstalldocs
}

pkg_postinst() {
	udev_reload

	if ! grep -q -s -R -- '--jobserver-auth=' "${EROOT}"/etc/portage/make.conf; then
		elog "To use the system-wide jobserver, enable the service:"
		elog
		elog "  for OpenRC:"
		elog "    rc-update add steved default"
		elog "    rc-service steved start"
		elog
		elog "  for systemd:"
		elog "    systemctl enable --now steved"
		elog
		elog "Then add to /etc/portage/make.conf (32: your number of CPUs):"
		elog
		elog '  MAKEOPTS="-j32 -l32"'
		elog '  NINJAOPTS="-l32"'
		elog '  MAKEFLAGS="-l32 --jobserver-auth=fifo:/dev/steve"'
		elog
		elog "emake leaves MAKEOPTS out when MAKEFLAGS is set (Portage >= 3.0.72; older"
		elog "ones with the emerge shim below), so make stays in the pool, while ebuilds"
		elog "that read N from MAKEOPTS (epytest, cargo) still get it. Never put -j in"
		elog "MAKEFLAGS or NINJAOPTS: there it turns the jobserver off."
		if ! use portage; then
			elog "Without USE=portage (the emerge shim), FEATURES=jobserver-token (Portage"
			elog ">= 3.0.74) makes each emerge job hold a token."
		fi
		elog
		elog "/dev/steve is root:jobserver 0660: add the users who build outside Portage"
		elog "to the jobserver group, and check that \"id -nG portage\" lists it"
		elog "(usermod -aG jobserver portage). Settings: /etc/steved.toml; at runtime:"
		elog "stevectl status, stevectl --set-jobs N."
	fi

	if [[ -z ${ROOT} && ! -e /dev/cuse ]]; then
		elog
		elog "There is no /dev/cuse here (modprobe cuse?). Without it steved serves"
		elog '  MAKEFLAGS="-l32 --jobserver-auth=fifo:/run/steved/jobserver"'
		elog "instead; under systemd it then needs 'user_allow_other' in /etc/fuse.conf."
	fi

	if use portage; then
		elog
		elog "And the emerge shim in /etc/portage/bashrc: each package job holds one"
		elog "token while it builds, so emerge --jobs cannot overrun the pool (any"
		elog "Portage), and package.env may set JOBSERVER_MAX_JOBS / JOBSERVER_TOKENS:"
		elog
		elog "  if [[ -r ${EPREFIX}/usr/share/steved/steved-jobserver.bashrc ]]; then"
		elog "      source ${EPREFIX}/usr/share/steved/steved-jobserver.bashrc"
		elog "      steved_jobserver_hook"
		elog "  fi"
	fi
}

pkg_postrm() {
	udev_reload
}
