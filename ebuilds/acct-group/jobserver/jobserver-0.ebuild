# Copyright 2026 steved authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit acct-group

DESCRIPTION="Access to system-wide jobservers (/dev/steve)"
# The GID of ::gentoo's acct-group/jobserver, so both give the same group.
ACCT_GROUP_ID=556
