# Copyright 2026 steved authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit acct-user

DESCRIPTION="The user dev-build/steved runs as"
# An overlay allocates its ids dynamically (a fixed id is for ::gentoo).
ACCT_USER_ID=-1
# cuse: /dev/cuse belongs to it (sys-fs/fuse-common), so steved registers
# /dev/steve without root.
ACCT_USER_GROUPS=( steved cuse )

acct-user_add_deps
