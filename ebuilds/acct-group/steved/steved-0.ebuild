# Copyright 2026 steved authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit acct-group

DESCRIPTION="The group of the user dev-build/steved runs as"
# An overlay allocates its ids dynamically (a fixed id is for ::gentoo).
ACCT_GROUP_ID=-1
