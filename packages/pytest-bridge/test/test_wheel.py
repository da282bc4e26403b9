"""The plugin as pip users get it: a wheel built from this package, installed into a fresh venv
together with pytest and pytest-xdist from PyPI (wheel/requirements.txt), used against a real
steved on a FUSE file, with `jobclient` from its npm tarball (`npm install -g`); and a real third-party suite from PyPI (more-itertools' sdist) under
`-n 4 -p jobserver`.

Needs the network to PyPI (pip) besides root and /dev/fuse; fails, never skips, without them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
from conftest import HERE, ROOT, Inner, Job, max_overlap, parse_log
from test_bridge import FALLBACK, WAIT_LINE, fallback_warning, say, summary_counts

PKG = HERE.parent
WHEEL_DIR = HERE / "wheel"
#: The third-party suite: a pinned sdist from PyPI, run as it comes.
THIRD_PARTY = ("more-itertools", "10.8.0")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert r.returncode == 0, f"{cmd} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@dataclass
class Venv:
    dir: Path
    python: Path
    wheel: Path

    def bin_path(self, tmp: Path, jobclient_bin: Optional[Path]) -> str:
        """A PATH with `node`, the venv's bin and, if given, the bin directory of an npm install
        of jobclient; nothing else, so no other `jobclient` on this machine can be found."""
        d = tmp / "bin-node"
        d.mkdir(exist_ok=True)
        node = shutil.which("node")
        assert node, "these tests need Node.js (`node` on PATH)"
        if not (d / "node").exists():
            (d / "node").symlink_to(node)
        path = f"{d}:{self.dir / 'bin'}"
        if jobclient_bin is not None:
            path = f"{d}:{jobclient_bin}:{self.dir / 'bin'}"
        found = shutil.which("jobclient", path=path)
        assert (found is not None) == (jobclient_bin is not None), f"PATH={path}: jobclient is {found}"
        return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    """Build the wheel (python -m build), make a fresh venv, pip install the wheel and the pins."""
    d = tmp_path_factory.mktemp("wheel")
    dist = d / "dist"
    env = dict(os.environ, PIP_CONSTRAINT=str(WHEEL_DIR / "build-constraints.txt"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    # Out of tree: build works on a copy, so the checkout's egg-info does not leak into the wheel.
    src = d / "src"
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("test", "bench", "*.egg-info", "__pycache__", "build", "dist"))
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)], env=env)
    (wheel,) = dist.glob("pytest_steved_jobserver-*.whl")
    vdir = d / "venv"
    # The base interpreter, not the project's .venv: nothing of .venv may be visible.
    base = getattr(sys, "_base_executable", None) or "/usr/bin/python3"
    _run([base, "-m", "venv", str(vdir)])
    py = vdir / "bin" / "python"
    pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    pip_env.pop("PIP_CONSTRAINT", None)
    _run([str(py), "-m", "pip", "install", "-q", "-r", str(WHEEL_DIR / "requirements.txt"), str(wheel)], env=pip_env)
    # The plugin came from the wheel, not from the checkout.
    where = _run([str(py), "-c", "import pytest_steved_jobserver as m; print(m.__file__)"]).stdout.strip()
    assert where.startswith(str(vdir)), where
    return Venv(vdir, py, wheel)


@pytest.fixture(scope="module")
def npm_jobclient(tmp_path_factory) -> Path:
    """steved's jobclient the way npm users get it: `npm pack` of packages/jobclient (a copy, so
    its prepack rebuild never touches the checkout's build/), then `npm install -g --prefix P
    jobclient-VERSION.tgz`. Returns P/bin, which holds the `jobclient` command npm linked."""
    d = tmp_path_factory.mktemp("npm")
    src = ROOT / "packages" / "jobclient"
    stage = d / "root"
    copy = stage / "packages" / "jobclient"
    copy.parent.mkdir(parents=True)
    shutil.copy(ROOT / "tsconfig.base.json", stage / "tsconfig.base.json")
    (stage / "node_modules").symlink_to(ROOT / "node_modules")
    shutil.copytree(
        src, copy, symlinks=True,
        ignore=lambda where, names: [n for n in names if (Path(where) == src and n in ("node_modules", "build", "prebuilds")) or n.endswith(".tgz")],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("npm_package_", "npm_lifecycle_")) and k not in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS", "NODE_PATH")}
    out = d / "out"
    out.mkdir()
    _run(["npm", "pack", "--pack-destination", str(out), "--loglevel=error"], cwd=copy, env=env)
    (tgz,) = out.glob("jobclient-*.tgz")
    prefix = d / "prefix"
    node_prefix = str(Path(shutil.which("node") or "/usr/bin/node").resolve().parent.parent)
    _run(
        ["npm", "install", "-g", "--prefix", str(prefix), str(tgz), "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=d, env={**env, "npm_config_nodedir": node_prefix},
    )
    exe = prefix / "bin" / "jobclient"
    assert exe.exists(), f"npm install -g linked no {exe}"
    assert _run([str(exe), "--help"], env={**env, "PATH": f"{Path(node_prefix) / 'bin'}:/usr/bin:/bin"}).stdout.startswith("Usage: jobclient")
    say(f"jobclient from npm: {tgz.name} installed with npm install -g into {prefix}")
    return prefix / "bin"


def _inner(tmp_path: Path, venv: Venv, jobclient_bin: Optional[Path]) -> Inner:
    suite = Inner(tmp_path)
    del suite.env["PYTEST_JOBSERVER_AGENT"]  # found on PATH, as installed setups do
    suite.env["PATH"] = venv.bin_path(tmp_path, jobclient_bin)
    return suite


def _argv(venv: Venv) -> list[str]:
    return [str(venv.python), "-m", "pytest", "-p", "no:cacheprovider", "-rA"]


@pytest.fixture
def inner_venv(tmp_path: Path):
    made: list[Inner] = []
    yield made
    left = [p for suite in made for p in suite.leftovers()]
    assert not left, f"processes left behind: {left}"


# -- metadata ---------------------------------------------------------------------------------


def test_wheel_metadata_says_it_needs_jobclient(venv: Venv) -> None:
    with zipfile.ZipFile(venv.wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        eps = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode()
        names = z.namelist()
    summary = re.search(r"^Summary: (.*)$", meta, re.M)
    assert summary and "jobclient" in summary.group(1), meta[:2000]
    assert re.search(r"^Project-URL: .*jobclient.*", meta, re.M | re.I), meta[:2000]
    body = meta.split("\n\n", 1)[1]
    assert "npm install -g" in body and "dev-build/steved" in body, "the README (long description) says how to get jobclient"
    assert re.search(r"^\[pytest11\]\s*\njobserver = pytest_steved_jobserver\.plugin$", eps, re.M), eps
    assert not any("/test/" in n or n.startswith("test/") for n in names), names
    say(f"{venv.wheel.name}: Summary names jobclient; Project-URL for it; README with npm and Gentoo installs; pytest11 jobserver")


# -- the fresh venv ---------------------------------------------------------------------------


def test_fresh_venv_without_jobclient_warns_and_goes_on(steved, venv: Venv, tmp_path: Path, inner_venv) -> None:
    """pip users who have not installed jobclient: MAKEFLAGS names steved, no -p (autoload)."""
    s = steved(2)
    suite = _inner(tmp_path, venv, None)
    inner_venv.append(suite)
    suite.add("test_jobs.py")
    env = {"MAKEFLAGS": " " + s.makeflags, "INNER_TESTS": "4"}
    r = suite.run(["-n", "3"], env, argv0=_argv(venv))
    assert r.rc == 0, r.out
    w = fallback_warning(r.out)
    assert "steved's `jobclient` command, through which the jobserver plugin takes tokens, is not on PATH [ERR_AGENT_NOT_FOUND]; install it: npm install -g " in w, w
    assert "emerge dev-build/steved" in w, w
    assert "created: 1/1 worker" in r.out and summary_counts(r.out) == {"passed": 4}, r.out
    jobs, _, _ = parse_log(r.log)
    assert len(jobs) == 4 and {j.worker for j in jobs} == {"gw0"} and max_overlap(jobs) == 1
    assert s.settled()["counters"]["granted"] == 0
    r = suite.run(["-n", "3"], {**env, "PYTEST_JOBSERVER_STRICT": "1"}, argv0=_argv(venv))
    assert r.rc == 4 and "[ERR_AGENT_NOT_FOUND]" in r.out and not r.log, r.out
    say(f"fresh venv, no jobclient: exit 0, one warning, 4 tests one at a time; strict: exit 4. Warning: {w}")


def test_fresh_venv_with_jobclient_on_path(steved, venv: Venv, npm_jobclient: Path, tmp_path: Path, inner_venv) -> None:
    """jobclient installed from its npm tarball, found on PATH: the plugin holds the pool."""
    N, M = 2, 4
    s = steved(N)
    suite = _inner(tmp_path, venv, npm_jobclient)
    inner_venv.append(suite)
    suite.add("test_jobs.py")
    r = suite.run(["-n", str(M), "-p", "jobserver"], {"MAKEFLAGS": " " + s.makeflags, "INNER_TESTS": "12", "INNER_BARRIER": str(N + 1)}, argv0=_argv(venv))
    assert r.rc == 0 and FALLBACK not in r.out, r.out
    assert r.header().startswith(f"jobserver: fifo:{s.path} (from MAKEFLAGS); each xdist worker"), r.header()
    jobs, _, _ = parse_log(r.log)
    peak = max_overlap(jobs)
    assert len(jobs) == 12 and peak == N + 1, f"peak {peak}"
    m = WAIT_LINE.search(r.out)
    assert m, r.out
    st = s.settled()
    assert st["counters"]["granted"] == sum(1 for j in jobs if j.worker != "gw0") + (M - 1), st["counters"]
    assert st["pool"]["free"] == N
    say(f"fresh venv, jobclient on PATH: peak {peak} (limit {N}+1); {m.group(0)}")


# -- a real third-party suite -----------------------------------------------------------------


def _outcomes(out: str) -> dict[str, int]:
    line = [l for l in out.splitlines() if re.match(r"^=+ .* in [\d.]+s", l)][-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", line)}
    assert counts, line
    return counts


@pytest.fixture(scope="module")
def third_party(venv: Venv, tmp_path_factory) -> Path:
    """The pinned sdist from PyPI, unpacked and installed into the fresh venv (no test deps beyond pytest)."""
    name, version = THIRD_PARTY
    d = tmp_path_factory.mktemp("sdist")
    _run([str(venv.python), "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps", f"{name}=={version}", "-d", str(d)])
    (archive,) = d.glob("*.tar.gz")
    with tarfile.open(archive) as t:
        # The "data" filter where this Python has it (3.11.4+); the archive is a pinned PyPI sdist.
        t.extractall(d, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (src,) = [p for p in d.iterdir() if p.is_dir()]
    _run([str(venv.python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)])
    return src


def _jobs(log: Path) -> list[Job]:
    starts: dict[str, tuple[int, str]] = {}
    jobs = []
    for line in log.read_text().splitlines():
        kind, name, ns, worker = line.split()
        if kind == "start":
            starts[name] = (int(ns), worker)
        else:
            t0, w = starts.pop(name)
            jobs.append(Job(name, t0, int(ns), w, None))
    assert not starts, f"tests that never ended: {list(starts)[:5]}"
    return jobs


def test_third_party_suite_under_the_plugin(steved, venv: Venv, npm_jobclient: Path, third_party: Path, tmp_path: Path, inner_venv) -> None:
    """more-itertools' own tests, untouched, with -n 4: the same outcomes with and without the
    plugin, and under steved -j 2 never more than 2 + 1 at once (the control shows 4)."""
    N, M = 2, 4
    s = steved(N)
    suite = _inner(tmp_path, venv, npm_jobclient)
    inner_venv.append(suite)
    env = dict(suite.env)
    env["PYTHONPATH"] = str(WHEEL_DIR)  # jobrecorder.py
    env["JOBRECORDER_PAD_MS"] = "10"
    runs = {}
    for label, extra_args, extra_env in [
        ("without the plugin", ["-p", "no:jobserver"], {}),
        ("-p jobserver", ["-p", "jobserver"], {"MAKEFLAGS": " " + s.makeflags}),
    ]:
        log = tmp_path / f"record-{len(runs)}.log"
        cmd = [str(venv.python), "-m", "pytest", "-p", "no:cacheprovider", "-p", "jobrecorder", "-n", str(M)] + extra_args
        r = subprocess.run(
            cmd, cwd=third_party, env={**env, **extra_env, "JOBRECORDER_LOG": str(log)},
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900, start_new_session=True,
        )
        out = r.stdout + r.stderr
        print(f"$ {' '.join(cmd)} -> exit {r.returncode}\n{out}")
        assert "INTERNALERROR" not in out, out
        runs[label] = (r.returncode, _outcomes(out), _jobs(log), out)
    (rc0, counts0, jobs0, _), (rc1, counts1, jobs1, out1) = runs.values()
    assert rc1 == rc0 and counts1 == counts0, (counts0, counts1)
    assert counts0.get("passed", 0) > 500, counts0
    assert len(jobs1) == len(jobs0) == sum(counts0.get(k, 0) for k in ("passed", "failed", "skipped", "xfailed", "xpassed"))
    peak0, peak1 = max_overlap(jobs0), max_overlap(jobs1)
    assert peak0 > N + 1, f"control: without the plugin the recorder must see more than {N}+1 at once, saw {peak0}"
    assert peak1 <= N + 1, f"peak {peak1} under steved -j {N}"
    assert re.search(rf"^jobserver: fifo:{re.escape(str(s.path))} \(from MAKEFLAGS\); each xdist worker", out1, re.M), out1
    m = WAIT_LINE.search(out1)
    assert m, out1
    st = s.settled()
    tokened = sum(1 for j in jobs1 if j.worker != "gw0")
    assert st["counters"]["granted"] == tokened + (M - 1) and st["pool"]["free"] == N, st["counters"]
    name, version = THIRD_PARTY
    say(
        f"{name} {version} sdist, -n {M}: outcomes {counts0} without the plugin and {counts1} with it; "
        f"peak {peak0} without, {peak1} under steved -j {N} (limit {N}+1); {st['counters']['granted']} tokens = "
        f"{tokened} tests + {M - 1} collections; {m.group(0)}"
    )
