#!/usr/bin/env python3
"""Per-test cost of the plugin: the same trivial tests with -n 2, with and without -p jobserver.

    .venv/bin/python packages/pytest-bridge/bench/overhead.py [--tests 2000] [--rounds 3]

Starts a steved on a FUSE file (root, /dev/fuse) and, in one run, alternates:
  off       -p no:jobserver                   (the plugin not loaded at all)
  none      plugin loaded, no jobserver named (header only)
  steved    plugin loaded, MAKEFLAGS naming steved -j 2: gw1 takes a token per test
Prints the median wall time of each and the ratio to `off`; not a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
NODE = shutil.which("node") or "node"


def start_steved(path: Path, jobs: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [NODE, str(ROOT / "packages/steved/bin/steved.js"), "--transport", "fuse", "--path", str(path), "-j", str(jobs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    out = b""
    deadline = time.monotonic() + 30
    while b"MAKEFLAGS=" not in out:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("steved did not start")
        if select.select([proc.stdout], [], [], 0.1)[0]:
            out += os.read(proc.stdout.fileno(), 4096)
    return proc


def stop_steved(proc: subprocess.Popen, path: Path) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with open("/proc/self/mountinfo") as f:
        if any(l.split(" ")[4] == str(path) for l in f):
            subprocess.run(["umount", "-l", str(path)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    opts = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pytest-bridge-bench."))
    suite = work / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_trivial.py").write_text(
        f"import pytest\n\n@pytest.mark.parametrize('i', range({opts.tests}))\ndef test_trivial(i):\n    pass\n"
    )
    js = work / "js"
    steved = start_steved(js, 2)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k not in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS")}
    base["PYTEST_JOBSERVER_AGENT"] = f"{NODE} {ROOT / 'packages/jobclient/bin/jobclient.js'}"
    modes = {
        "off": (["-p", "no:jobserver"], {}),
        "none": ([], {}),
        "steved": ([], {"MAKEFLAGS": f" --jobserver-auth=fifo:{js}"}),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    per_worker: dict[str, str] = {}
    try:
        for _ in range(opts.rounds):
            for mode, (args, env) in modes.items():
                cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2", *args]
                t0 = time.monotonic()
                r = subprocess.run(cmd, cwd=suite, env={**base, **env}, capture_output=True, text=True, timeout=1800)
                dt = time.monotonic() - t0
                if r.returncode != 0 or f"{opts.tests} passed" not in r.stdout:
                    raise SystemExit(f"{mode}: pytest failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
                times[mode].append(dt)
        status = subprocess.run(
            [NODE, str(ROOT / "packages/steved/bin/stevectl.js"), "--device", str(js), "status", "--json"],
            capture_output=True, text=True, check=True,
        ).stdout
        granted = int(re.search(r'"granted": (\d+)', status).group(1))
    finally:
        stop_steved(steved, js)
        shutil.rmtree(work, ignore_errors=True)

    med = {m: statistics.median(v) for m, v in times.items()}
    per_run = granted / opts.rounds
    print(f"{opts.tests} trivial tests, -n 2, {opts.rounds} rounds (median wall time of the whole pytest run):")
    for m in modes:
        print(f"  {m:7s} {med[m]:7.2f} s   ({med[m] / med['off']:.2f}x of off)   runs: {', '.join(f'{t:.2f}' for t in times[m])}")
    extra = med["steved"] - med["off"]
    print(f"  steved granted {per_run:.0f} tokens per run (gw1's tests + its collection; gw0 takes none)")
    print(f"  cost per token-taking test: {extra / per_run * 1e6:.0f} us of wall time ({(med['steved'] - med['none']) / per_run * 1e6:.0f} us over 'none')")


if __name__ == "__main__":
    main()
