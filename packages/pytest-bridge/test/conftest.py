"""Fixtures of the pytest-bridge suite: a real steved on a FUSE file, inner pytest runs.

Every inner run is real pytest + pytest-xdist from the project venv, with this package's
plugin talking to a real `jobclient agent`. Every process a test starts carries a marker in
its environment; after each test none may be left, and every steved is stopped and its FUSE
file unmounted even when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

HERE = Path(__file__).resolve().parent
INNER = HERE / "inner"
ROOT = Path(os.environ.get("STEVED_ROOT") or HERE.parents[2])
PYTHON = sys.executable
MARK_VAR = "PYTEST_BRIDGE_TEST_MARK"

sys.path.insert(0, str(ROOT / "test" / "helpers"))
import steved_helpers  # noqa: E402  (the project's shared Python helpers)
from steved_helpers import is_mounted  # noqa: E402

# The inner suites are run by the tests, not collected here.
collect_ignore = ["inner"]


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("these tests need Node.js (`node` on PATH)")
    return node


def _script(package: str, name: str) -> list[str]:
    """`node packages/<package>/bin/<name>.js` from the checkout, else `<name>` on PATH."""
    js = ROOT / "packages" / package / "bin" / f"{name}.js"
    if js.is_file():
        return [_node(), str(js)]
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"neither {js} nor `{name}` on PATH")
    return [exe]


STEVED = _script("steved", "steved")
STEVECTL = _script("steved", "stevectl")
JOBCLIENT = _script("jobclient", "jobclient")


def make44() -> str:
    """GNU make >= 4.4 (the venv's; Debian bookworm's /usr/bin/make is 4.3)."""
    for cand in (os.environ.get("STEVED_MAKE44"), str(Path(PYTHON).parent / "make"), str(ROOT / ".venv" / "bin" / "make"), shutil.which("make")):
        if cand and Path(cand).is_file():
            out = subprocess.run([cand, "--version"], capture_output=True, text=True).stdout
            if re.search(r"GNU Make 4\.([4-9]|\d\d)", out):
                return cand
    raise RuntimeError("no GNU make >= 4.4 (run scripts/setup.sh)")


@dataclass
class Steved:
    path: Path
    jobs: int
    proc: subprocess.Popen
    makeflags: str
    stderr_file: Path

    def status(self) -> dict:
        return steved_helpers.status(self.path, STEVECTL)

    def settled(self, timeout: float = 30.0) -> dict:
        """The status once no token is held (holders give back asynchronously after they exit)."""
        deadline = time.monotonic() + timeout
        st = self.status()
        while (st["pool"]["held"] or st["holders"] or st["waiters"]) and time.monotonic() < deadline:
            time.sleep(0.1)
            st = self.status()
        return st

    def stop(self) -> None:
        died = self.proc.poll()
        if died is not None:
            # Stopped by the test itself, or died: its last words are in the failure report.
            print(f"steved on {self.path} had exited with {died}; its stderr:\n{self.stderr_file.read_text(errors='replace')[-4000:]}")
        steved_helpers.stop(self.proc, self.path)
        assert not is_mounted(self.path), f"{self.path} is still mounted"


@pytest.fixture
def steved(tmp_path: Path):
    """start(jobs) -> Steved: a real steved serving `jobs` tokens on a FUSE file in tmp_path."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.fail("these tests need root and /dev/fuse (they mount FUSE files)")
    started: list[Steved] = []

    def start(jobs: int, name: str = "js") -> Steved:
        path = tmp_path / name
        errf = tmp_path / f"{name}.steved.err"
        proc, makeflags = steved_helpers.start(STEVED, path, jobs, out=tmp_path / f"{name}.steved.out", err=errf, timeout=30)
        s = Steved(path, jobs, proc, makeflags, errf)
        started.append(s)
        assert s.makeflags == f"--jobserver-auth=fifo:{path}"
        return s

    yield start
    for s in started:
        s.stop()


@dataclass
class Run:
    rc: int
    out: str
    log: list[str] = field(default_factory=list)

    def header(self) -> str:
        # The report header ends at the first blank line (the end-of-run line also starts "jobserver:").
        head = self.out.split("\n\n", 1)[0]
        lines = [l for l in head.splitlines() if l.startswith("jobserver:")]
        assert len(lines) == 1, f"expected one jobserver header line in:\n{self.out}"
        return lines[0]


@dataclass
class Job:
    name: str
    start: int
    end: int
    worker: str
    token: Optional[int]


def parse_log(lines: list[str]) -> tuple[list[Job], list[tuple[str, Optional[int]]], dict[str, tuple[str, Optional[int]]]]:
    """(complete jobs, collection records (worker, token), unfinished starts by name)."""
    starts: dict[str, tuple[int, str, Optional[int]]] = {}
    jobs: list[Job] = []
    collects: list[tuple[str, Optional[int]]] = []
    for line in lines:
        w = line.split()
        if not w or w[0] not in ("start", "end", "collect"):
            continue
        tok = None if w[-1] == "None" else int(w[-1])
        if w[0] == "start":
            starts[w[1]] = (int(w[2]), w[3], tok)
        elif w[0] == "end":
            s, worker, t = starts.pop(w[1])
            jobs.append(Job(w[1], s, int(w[2]), worker, t))
        elif w[0] == "collect":
            collects.append((w[1], tok))
    unfinished = {name: (worker, tok) for name, (_, worker, tok) in starts.items()}
    return jobs, collects, unfinished


def slots(lines: list[str]) -> dict[str, str]:
    """Test name -> what it ran in, as the plugin said (token, implicit, shared, None)."""
    return {w[1]: w[3] for w in (l.split() for l in lines) if len(w) == 4 and w[0] == "slot"}


def max_overlap(jobs: list[Job]) -> int:
    """Most jobs running at one instant (an end at the same ns as a start does not overlap)."""
    ev = sorted([(j.start, 1) for j in jobs] + [(j.end, -1) for j in jobs], key=lambda e: (e[0], e[1]))
    cur = peak = 0
    for _, d in ev:
        cur += d
        peak = max(peak, cur)
    return peak


def base_env(mark: str) -> dict[str, str]:
    """The outer environment without anything that names a jobserver or configures pytest."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTEST_") and k not in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    }
    env["PYTEST_JOBSERVER_AGENT"] = " ".join(JOBCLIENT)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env[MARK_VAR] = mark
    return env


def marked_processes(mark: str) -> list[str]:
    """Processes (other than this one) whose environment carries `mark`."""
    found = []
    needle = f"{MARK_VAR}={mark}".encode()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{d}: {cmdline}")
        except OSError:
            continue
    return found


class Inner:
    """An inner test directory and the pytest runs in it."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "suite"
        self.dir.mkdir()
        (self.dir / "pytest.ini").write_text("[pytest]\n")
        shutil.copy(INNER / "conftest.py", self.dir / "conftest.py")
        self.log = tmp_path / "jobs.log"
        self.mark = uuid.uuid4().hex
        self.tmp = tmp_path
        self.env = base_env(self.mark)
        self.env["INNER_LOG"] = str(self.log)
        self.env["INNER_DIR"] = str(tmp_path)

    def add(self, name: str) -> None:
        shutil.copy(INNER / name, self.dir / name)

    def run(self, args: list[str], env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None, argv0: Optional[list[str]] = None) -> Run:
        """Run pytest (or `argv0 + args`) and return its exit status, output and job log."""
        if self.log.exists():
            self.log.unlink()
        for flag in self.tmp.glob("flag-*"):
            flag.unlink()
        full_env = dict(self.env)
        full_env.update(env or {})
        cmd = (argv0 if argv0 is not None else [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-rA"]) + args
        proc = subprocess.Popen(
            cmd,
            cwd=cwd or self.dir,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            raise AssertionError(f"{cmd} did not finish within 300 s:\n{out.decode(errors='replace')}")
        text = out.decode(errors="replace")
        print(f"$ {' '.join(cmd)}  -> exit {proc.returncode}\n{text}")
        log = self.log.read_text().splitlines() if self.log.exists() else []
        return Run(proc.returncode, text, log)

    def start(self, args: list[str], env: Optional[dict[str, str]] = None) -> subprocess.Popen:
        """Start pytest in its own process group (the caller signals and waits for it)."""
        full_env = dict(self.env)
        full_env.update(env or {})
        return subprocess.Popen(
            [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-rA"] + args,
            cwd=self.dir,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=open(self.tmp / "started.out", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A suite started in the background by a non-interactive shell inherits SIGINT
            # ignored, and Python then never raises KeyboardInterrupt: the callers send SIGINT.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def wait_log(self, pred, timeout: float = 120.0) -> list[str]:
        """Wait until pred(log lines) holds; fails after `timeout` (a guard against hangs)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log.read_text().splitlines() if self.log.exists() else []
            if pred(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"the job log never got there: {lines}")
            time.sleep(0.02)

    def leftovers(self, timeout: float = 30.0) -> list[str]:
        """Processes this directory's runs started that are still there (after a grace period)."""
        deadline = time.monotonic() + timeout
        left = marked_processes(self.mark)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = marked_processes(self.mark)
        return left


@pytest.fixture
def inner(tmp_path: Path):
    suite = Inner(tmp_path)
    yield suite
    left = suite.leftovers()
    for entry in left:
        try:
            os.kill(int(entry.split(":")[0]), signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"processes left behind: {left}"
