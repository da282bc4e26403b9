#!/usr/bin/env python3
"""Static checks of the Gentoo overlay (ebuilds/) and the service files (packaging/): the
things Portage, pkgcheck or a user would trip over, and the places where two files must agree
(the udev rule and /etc/steved.toml, the unit and the acct-* packages, LICENSE and the bundled
node_modules, the daemon's default device name and the sandbox rule).

    check-overlay.py ROOT

Prints "ok - NAME", "not ok - NAME: WHY" or "skip - NAME: WHY" per check; exit 1 if any failed.
Run by test/ebuilds/run-suite.sh.
"""

import json
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve()
OVERLAY = ROOT / "ebuilds"
PACKAGING = ROOT / "packaging"
failures = 0

# Groups ::gentoo provides that the overlay does not (acct-group/cuse comes with fuse-common;
# acct-group/jobserver, GID 556, is ::gentoo's: the overlay must not shadow it).
GENTOO_GROUPS = {"cuse", "jobserver"}
# USE flags with a global description in ::gentoo (profiles/use.desc): no <flag> needed.
GLOBAL_FLAGS = {"test"}
# npm "license" fields -> Gentoo license names.
SPDX_TO_GENTOO = {"MIT": "MIT", "ISC": "ISC", "Apache-2.0": "Apache-2.0", "BSD-2-Clause": "BSD-2",
                  "BSD-3-Clause": "BSD", "0BSD": "0BSD", "BlueOak-1.0.0": "BlueOak-1.0.0"}
# [build-system] build-backend -> DISTUTILS_USE_PEP517
BACKENDS = {"setuptools.build_meta": "setuptools", "hatchling.build": "hatchling",
            "flit_core.buildapi": "flit", "poetry.core.masonry.api": "poetry",
            "pdm.backend": "pdm-backend", "uv_build": "uv-build"}


def check(name, ok, why=""):
    global failures
    if ok:
        print(f"ok - {name}")
    else:
        failures += 1
        print(f"not ok - {name}: {why}")


def skip(name, why):
    print(f"skip - {name}: {why}")


def var(text, name):
    """The value of NAME="..." (or NAME=(...), or NAME=word) at the start of a line."""
    m = re.search(rf'^{name}=(?:"(.*?)"|\((.*?)\)|(\S*))', text, re.M | re.S)
    if not m:
        return None
    return next(g for g in m.groups() if g is not None)


def ebuilds():
    return sorted(OVERLAY.glob("*/*/*.ebuild"))


# --- layout ---------------------------------------------------------------------------------
layout = (OVERLAY / "metadata/layout.conf").read_text()
conf = dict(re.findall(r"^([\w-]+)\s*=\s*(.*?)\s*$", layout, re.M))
repo_name = (OVERLAY / "profiles/repo_name").read_text().strip()
check("profiles/repo_name matches layout.conf repo-name", conf.get("repo-name") == repo_name,
      f"{repo_name!r} vs {conf.get('repo-name')!r}")
check("layout.conf: masters = gentoo, thin manifests",
      conf.get("masters") == "gentoo" and conf.get("thin-manifests") == "true", str(conf))

# --- every ebuild -----------------------------------------------------------------------------
for eb in ebuilds():
    rel = eb.relative_to(OVERLAY)
    text = eb.read_text()
    pn = eb.parent.name
    m = re.fullmatch(rf"{re.escape(pn)}-(\d+(?:\.\d+)*)(?:-r\d+)?\.ebuild", eb.name)
    check(f"{rel}: file name is PN-PV.ebuild", m is not None, "bad version part")
    check(f"{rel}: EAPI=8", re.search(r"^EAPI=8$", text, re.M) is not None, "no EAPI=8 line")
    check(f"{rel}: copyright and GPL-2 header",
          re.match(r"# Copyright \d{4}(-\d{4})? .+\n# Distributed under the terms of the GNU General Public License v2\n", text)
          is not None, "the two header lines are missing")
    check(f"{rel}: DESCRIPTION set, under 80 characters",
          0 < len(var(text, "DESCRIPTION") or "") < 80, repr(var(text, "DESCRIPTION")))
    check(f"{rel}: no trailing whitespace", not re.search(r"[ \t]$", text, re.M), "trailing blanks")
    if not pn.startswith("acct-") and eb.parent.parent.name not in ("acct-user", "acct-group"):
        check(f"{rel}: LICENSE and SLOT set", bool(var(text, "LICENSE")) and var(text, "SLOT") == "0",
              f"LICENSE={var(text, 'LICENSE')!r} SLOT={var(text, 'SLOT')!r}")

# --- metadata.xml per package -----------------------------------------------------------------
for pkgdir in sorted({eb.parent for eb in ebuilds()}):
    rel = pkgdir.relative_to(OVERLAY)
    md = pkgdir / "metadata.xml"
    if not md.exists():
        check(f"{rel}/metadata.xml exists", False, "missing")
        continue
    raw = md.read_text()
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as e:
        check(f"{rel}/metadata.xml is well-formed", False, str(e))
        continue
    check(f"{rel}/metadata.xml: pkgmetadata with the metadata.dtd DOCTYPE",
          root.tag == "pkgmetadata" and "https://www.gentoo.org/dtd/metadata.dtd" in raw, root.tag)
    check(f"{rel}/metadata.xml: a maintainer or <!-- maintainer-needed -->",
          root.find("maintainer") is not None or "<!-- maintainer-needed -->" in raw, "neither")
    flags = {f.get("name") for f in root.iter("flag")}
    for eb in sorted(pkgdir.glob("*.ebuild")):
        iuse = {f.lstrip("+-") for f in (var(eb.read_text(), "IUSE") or "").split()}
        local = iuse - GLOBAL_FLAGS
        check(f"{eb.relative_to(OVERLAY)}: every local USE flag described in metadata.xml and no extra",
              local == flags, f"IUSE {sorted(local)} vs metadata.xml {sorted(flags)}")

# --- dev-build/steved -------------------------------------------------------------------------
steved = sorted((OVERLAY / "dev-build/steved").glob("*.ebuild"))
live = OVERLAY / "dev-build/steved/steved-9999.ebuild"
check("dev-build/steved: a live 9999 ebuild and a release ebuild",
      live in steved and any(e != live for e in steved), [e.name for e in steved])
for eb in steved:
    if eb != live:
        check(f"{eb.name} is the live ebuild byte for byte (one body, switched on PV)",
              eb.read_bytes() == live.read_bytes(), "they differ: edit steved-9999.ebuild and copy it")
text = live.read_text()
rdepend = var(text, "RDEPEND") or ""
for atom in ("acct-group/jobserver", "acct-user/steved", "sys-fs/fuse:3", "net-libs/nodejs",
             "portage? ( sys-apps/portage )"):
    check(f"steved: RDEPEND has {atom}", atom in rdepend or (atom == "sys-fs/fuse:3" and "${DEPEND}" in rdepend
                                                              and "sys-fs/fuse:3" in (var(text, "DEPEND") or "")),
          "missing")
check('steved: pkg_pretend checks CONFIG_CHECK="~CUSE"',
      re.search(r'pkg_pretend\(\) \{\n\tlocal CONFIG_CHECK="~CUSE"', text) is not None, "not found")
# Tests only where they can run: the live ebuild (devDependencies) with FEATURES=test and
# privileged tests allowed; the release tarballs have no test runner.
test_block = re.search(r'^IUSE="portage"\nif \[\[ \$\{PV\} == 9999 \]\]; then\n((?:\t.*\n)+)else\n((?:\t.*\n)+)fi\n', text, re.M)
live_t, release_t = test_block.groups() if test_block else ("", "")
check("steved: tests need root: live IUSE test, RESTRICT=test with test_privileged; release RESTRICT=test",
      '\tIUSE+=" test"\n' in live_t and '\tRESTRICT="test"\n' in live_t
      and '\tPROPERTIES="test? ( test_privileged )"\n' in live_t and '\tRESTRICT="test"\n' in release_t,
      "the IUSE/RESTRICT/PROPERTIES block differs")
check("steved: the release ebuild gets node-gyp the offline way (--nodedir, npm's node-gyp)",
      '--nodedir="${ESYSROOT}/usr"' in text and "node_modules/npm/node_modules/node-gyp" in text, "missing")

# LICENSE covers what node_modules bundles.
plan = subprocess.run(["node", str(ROOT / "scripts/prod-modules.js"), str(ROOT), "packages/steved"],
                      capture_output=True, text=True)
if plan.returncode != 0:
    check("steved: LICENSE covers the bundled node_modules", False, plan.stderr.strip())
else:
    lic = set((var(text, "LICENSE") or "").split())
    missing = []
    for line in plan.stdout.splitlines():
        kind, *rest = line.split()
        if kind != "module":
            continue
        spdx = json.loads((ROOT / rest[0] / "package.json").read_text()).get("license", "?")
        gentoo = SPDX_TO_GENTOO.get(spdx)
        if gentoo is None or gentoo not in lic:
            missing.append(f"{rest[0]} ({spdx})")
    check("steved: LICENSE covers the bundled node_modules", not missing, f"not in LICENSE: {missing}")

# --- accounts and service files agree ----------------------------------------------------------
user_eb = (OVERLAY / "acct-user/steved/steved-0.ebuild").read_text()
user_groups = set((var(user_eb, "ACCT_USER_GROUPS") or "").split())
overlay_groups = {p.name for p in (OVERLAY / "acct-group").iterdir() if p.is_dir()}
check("acct-user/steved: every group it joins has an acct-group package",
      user_groups <= overlay_groups | GENTOO_GROUPS, f"{user_groups - overlay_groups - GENTOO_GROUPS}")
for eb in list((OVERLAY / "acct-user").glob("*/*.ebuild")) + list((OVERLAY / "acct-group").glob("*/*.ebuild")):
    t = eb.read_text()
    idv = var(t, "ACCT_USER_ID") or var(t, "ACCT_GROUP_ID")
    check(f"{eb.relative_to(OVERLAY)}: an id (-1: dynamic, as overlays should)",
          idv is not None and re.fullmatch(r"-1|\d+", idv) is not None, repr(idv))
check("acct-group/jobserver is ::gentoo's (GID 556), not shadowed by the overlay",
      not (OVERLAY / "acct-group/jobserver").exists(), "ebuilds/acct-group/jobserver exists")

unit = (PACKAGING / "steved.service").read_text()
unit_kv = {}
for k, v in re.findall(r"^(\w+)=(.*)$", unit, re.M):
    unit_kv.setdefault(k, []).append(v)
check("steved.service: Type=exec, Restart=on-failure",
      unit_kv.get("Type") == ["exec"] and unit_kv.get("Restart") == ["on-failure"], str(unit_kv))
check("steved.service: runs as the dedicated user and group of the overlay",
      unit_kv.get("User") == ["steved"] and (OVERLAY / "acct-user/steved").is_dir()
      and unit_kv.get("Group") == ["steved"] and "steved" in overlay_groups, str(unit_kv.get("User")))
supp = set(" ".join(unit_kv.get("SupplementaryGroups", [])).split())
check("steved.service: reaches /dev/cuse through the cuse group, which acct-user/steved joins",
      "cuse" in supp and supp <= user_groups, f"SupplementaryGroups {supp}, ACCT_USER_GROUPS {user_groups}")

toml = tomllib.loads((PACKAGING / "steved.toml").read_text())
udev = (PACKAGING / "90-steved.rules").read_text()
udev_rules = [l for l in udev.splitlines() if l.strip() and not l.startswith("#")]
udev_kv = dict(re.findall(r'(\w+)=="?([^",]*)"?', udev_rules[0] if udev_rules else ""))
udev_set = dict(re.findall(r'(\w+)="([^"]*)"', udev_rules[0] if udev_rules else ""))
check("steved.toml: group jobserver, mode 0660, and the group has an acct-group package",
      toml.get("group") == "jobserver" and toml.get("mode") == "0660" and "jobserver" in overlay_groups | GENTOO_GROUPS, str(toml))
check("90-steved.rules gives the device steved.toml's group and mode",
      udev_set.get("GROUP") == toml.get("group") and udev_set.get("MODE") == toml.get("mode"), str(udev_set))

# The daemon's own defaults, from its compiled code: the names the packaging files repeat.
defaults = subprocess.run(
    ["node", "-p", "const d = require(process.argv[1]); JSON.stringify([d.DEFAULT_DEV_NAME, d.DEFAULT_FUSE_PATH])",
     str(ROOT / "packages/steved/dist/daemon.js")], capture_output=True, text=True)
if defaults.returncode != 0:
    check("steved's defaults readable from packages/steved/dist/daemon.js", False, defaults.stderr.strip())
else:
    dev_name, fuse_path = json.loads(defaults.stdout)
    dev = f"/dev/{dev_name}"
    check(f"90-steved.rules matches the default device {dev}",
          udev_kv.get("SUBSYSTEM") == "cuse" and udev_kv.get("KERNEL") == dev_name, str(udev_kv))
    sandbox = (PACKAGING / "sandbox.conf").read_text()
    sw = (re.search(r'^SANDBOX_WRITE="([^"]*)"$', sandbox, re.M) or [None, ""])[1].split(":")
    check(f"sandbox.conf lets builds write {dev} and {fuse_path}",
          dev in sw and fuse_path in sw, str(sw))
    run_dir = Path(fuse_path).parent
    check(f"steved.service: RuntimeDirectory is {run_dir} and ExecStopPost detaches {fuse_path}",
          run_dir.parent == Path("/run") and unit_kv.get("RuntimeDirectory") == [run_dir.name]
          and any(fuse_path in v for v in unit_kv.get("ExecStopPost", [])), str(unit_kv.get("RuntimeDirectory")))
    check("steved ebuild tells the exact make.conf lines for both transports",
          f"'  MAKEFLAGS=\"-l32 --jobserver-auth=fifo:{dev}\"'" in text
          and f"MAKEFLAGS=\"-l32 --jobserver-auth=fifo:{fuse_path}\"" in text
          and "elog '  MAKEOPTS=\"-j32 -l32\"'" in text and "elog '  NINJAOPTS=\"-l32\"'" in text, "missing")

# --- the packages the overlay installs when they exist ----------------------------------------
bridge = ROOT / "packages/pytest-bridge/pyproject.toml"
bridge_eb = OVERLAY / "dev-python/pytest-steved-jobserver/pytest-steved-jobserver-9999.ebuild"
bt = bridge_eb.read_text()
check("pytest plugin ebuild: distutils-r1, EPYTEST_PLUGINS with itself, blocks pytest-jobserver",
      "inherit distutils-r1" in bt and re.search(r'^EPYTEST_PLUGINS=\( "\$\{PN\}"', bt, re.M) is not None
      and "!dev-python/pytest-jobserver" in bt and "S=${WORKDIR}/${P}/packages/pytest-bridge" in bt, "missing")
if bridge.exists():
    py = tomllib.loads(bridge.read_text())
    name = re.sub(r"[-_.]+", "-", py.get("project", {}).get("name", "")).lower()
    check("packages/pytest-bridge: distribution name is the ebuild's PN",
          name == bridge_eb.parent.name, f"{name!r} vs {bridge_eb.parent.name!r}")
    backend = py.get("build-system", {}).get("build-backend", "")
    check("packages/pytest-bridge: build backend matches DISTUTILS_USE_PEP517",
          BACKENDS.get(backend) == var(bt, "DISTUTILS_USE_PEP517"), f"{backend!r} vs {var(bt, 'DISTUTILS_USE_PEP517')!r}")
    eps = py.get("project", {}).get("entry-points", {}).get("pytest11", {})
    check("packages/pytest-bridge: pytest11 entry point named jobserver", "jobserver" in eps, str(eps))
else:
    skip("packages/pytest-bridge agrees with its ebuild", "packages/pytest-bridge is not in this tree yet")

shim = ROOT / "packages/emerge-shim"
if shim.exists():
    check("packages/emerge-shim: package.json and its Portage bashrc module in share/, where install.sh looks",
          (shim / "package.json").exists() and (shim / "share/steved-jobserver.bashrc").is_file(), "missing")
else:
    skip("packages/emerge-shim has what install.sh installs", "packages/emerge-shim is not in this tree yet")

sys.exit(1 if failures else 0)
