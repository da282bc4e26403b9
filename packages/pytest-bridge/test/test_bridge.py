"""The jobserver plugin with real pytest-xdist, a real steved on FUSE and a real jobclient agent."""

from __future__ import annotations

import errno
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import JOBCLIENT, STEVECTL, Inner, Run, Steved, max_overlap, make44, parse_log, slots


def say(msg: str) -> None:
    """The numbers behind a verdict; run-suite.sh prints them after the run."""
    print(f"[numbers] {msg}")
    path = os.environ.get("PYTEST_BRIDGE_NUMBERS")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0].split('::')[-1]}: {msg}\n")


def summary_counts(out: str) -> dict[str, int]:
    line = [l for l in out.splitlines() if re.match(r"^=+ .*\d+ (passed|failed|error)", l)][-1]
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?)", line)}


WAIT_LINE = re.compile(
    r"^jobserver: (\d+) tests waited (\d+\.\d\d) s for tokens in total, (\d+\.\d\d) s at most(?: \((\S+)\))?; "
    r"(\d+) ran in the implicit slot; collections waited (\d+\.\d\d) s",
    re.M,
)
FALLBACK = "WARNING: jobserver unavailable, using -n 1 (one test at a time): "


def fallback_warning(out: str) -> str:
    """The one warning line of a run that could not use its jobserver (it must be there once)."""
    lines = [l for l in out.splitlines() if l.startswith(FALLBACK)]
    assert len(lines) == 1, f"expected one warning line in:\n{out}"
    assert lines[0].endswith("--jobserver-strict makes this an error."), lines[0]
    return lines[0]


def assert_ran_one_at_a_time(r, n_tests: int) -> None:
    """The run went on like make's -j1: one xdist worker (gw0, the implicit slot), every test passed."""
    assert r.rc == 0, r.out
    assert "created: 1/1 worker" in r.out, r.out
    assert summary_counts(r.out) == {"passed": n_tests}, r.out
    jobs, _, unfinished = parse_log(r.log)
    assert len(jobs) == n_tests and not unfinished
    assert {j.worker for j in jobs} == {"gw0"} and all(j.token is None for j in jobs)
    assert max_overlap(jobs) == 1
    assert "jobserver: unavailable (see the warning above): ran with -n 1, took no tokens" in r.out, r.out


# -- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["MAKEFLAGS", "--jobserver"])
def test_xdist_never_runs_more_than_tokens_plus_implicit_slot(steved, inner: Inner, via: str) -> None:
    N, M = 2, 5  # M > N + 1: without the jobserver more would run at once
    s = steved(N)
    inner.add("test_jobs.py")
    args, env = ["-n", str(M)], {"INNER_BARRIER": str(N + 1), "INNER_TESTS": "15"}
    if via == "MAKEFLAGS":
        env["MAKEFLAGS"] = " " + s.makeflags
    else:
        args += ["--jobserver", str(s.path)]
    r = inner.run(args, env)
    assert r.rc == 0, r.out
    assert r.header() == (
        f"jobserver: fifo:{s.path} (from {via}); each xdist worker but the first (gw0, the implicit slot) "
        "holds one token per test and while collecting"
    )
    jobs, collects, unfinished = parse_log(r.log)
    assert len(jobs) == 15 and not unfinished and "barrier-timeout" not in "\n".join(r.log)
    peak = max_overlap(jobs)
    # Never more than N tokens + gw0's implicit slot; the barrier makes the runs reach it.
    assert peak == N + 1, f"peak {peak} with {N} tokens"
    workers = {j.worker for j in jobs}
    assert all(j.token is None for j in jobs if j.worker == "gw0")
    assert all(isinstance(j.token, int) for j in jobs if j.worker != "gw0")
    takers = {j.worker for j in jobs if j.token is not None}
    assert takers == {f"gw{i}" for i in range(1, M)}, f"workers that took tokens: {takers}"
    # Collection: a token in every worker but gw0.
    assert sorted(collects) == sorted([("gw0", None)] + [(w, c) for w, c in collects if w != "gw0"])
    assert len(collects) == M and all(c is not None for w, c in collects if w != "gw0")
    st = s.settled()
    n_tokened = sum(1 for j in jobs if j.worker != "gw0")
    # steved's own count: one grant per test in gw1..gw4 and one per their collections, none for gw0.
    assert st["counters"]["granted"] == n_tokened + (M - 1), st["counters"]
    assert st["counters"]["returned"] == st["counters"]["granted"] and st["counters"]["reclaimed"] == 0
    assert st["pool"]["free"] == N and st["holders"] == []
    # The end-of-run line: how long the tests waited (the barrier makes some wait).
    m = WAIT_LINE.search(r.out)
    assert m, r.out
    total, longest = float(m.group(2)), float(m.group(3))
    assert int(m.group(1)) == n_tokened and int(m.group(5)) == len(jobs) - n_tokened, m.group(0)
    assert 0 < longest <= total and m.group(4) is not None, m.group(0)
    say(f"{via}: end-of-run line: {m.group(0)}")
    say(
        f"{via}: steved -j {N}, -n {M}: peak {peak} tests at once (limit {N}+1); workers {sorted(workers)}; "
        f"{n_tokened} tests in gw1..gw{M - 1} + {M - 1} collections = {st['counters']['granted']} tokens granted, all returned"
    )


def test_make_fifo_jobserver_from_makeflags(inner: Inner, tmp_path: Path) -> None:
    """A real GNU make 4.4.1 (`-j3`, its own fifo jobserver) runs pytest -n 4 -p jobserver."""
    inner.add("test_jobs.py")
    (tmp_path / "Makefile").write_text(
        f"all:\n\t{subprocess.list2cmdline([sys.executable])} -m pytest -p no:cacheprovider -rA -n 4 -p jobserver\n"
    )
    r = inner.run(["-j3", "-f", str(tmp_path / "Makefile")], {"INNER_BARRIER": "3", "INNER_TESTS": "12"}, argv0=[make44()])
    assert r.rc == 0, r.out
    m = re.search(r"^jobserver: fifo:(\S+) \(from MAKEFLAGS\); each xdist worker", r.out, re.M)
    assert m, r.out
    jobs, collects, _ = parse_log(r.log)
    peak = max_overlap(jobs)
    # make -j3: 2 tokens in its FIFO + the recipe's implicit slot (gw0).
    assert peak == 3, f"peak {peak}"
    assert all(j.token is not None for j in jobs if j.worker != "gw0")
    assert all(j.token is None for j in jobs if j.worker == "gw0")
    say(f"make -j3 (fifo {m.group(1)}) -> pytest -n 4: peak {peak} tests at once (limit 2 tokens + 1)")


# -- no jobserver -------------------------------------------------------------------------------


def test_no_jobserver_does_nothing(steved, inner: Inner) -> None:
    """Control: the same measurement without a jobserver sees oversubscription, and steved nothing."""
    N, M = 2, 5
    s = steved(N)
    inner.add("test_jobs.py")
    r = inner.run(["-n", str(M)], {"INNER_BARRIER": str(N + 2), "INNER_TESTS": "15"})
    assert r.rc == 0, r.out
    assert r.header() == (
        "jobserver: none (no --jobserver, PYTEST_JOBSERVER, CARGO_MAKEFLAGS, MAKEFLAGS or MFLAGS); taking no tokens"
    )
    jobs, collects, _ = parse_log(r.log)
    peak = max_overlap(jobs)
    assert peak >= N + 2, f"peak {peak}: the measurement must see more than {N}+1 without a jobserver"
    assert all(j.token is None for j in jobs) and all(c is None for _, c in collects)
    st = s.settled()
    assert st["counters"]["granted"] == 0
    say(f"no jobserver, -n {M}: peak {peak} tests at once (> {N}+1, so the bound above is not vacuous); 0 tokens granted")

    # MAKEFLAGS set but naming no jobserver (make without -j), and a dry run: also none.
    r = inner.run(["-n", "2"], {"MAKEFLAGS": "s", "INNER_TESTS": "3"})
    assert r.rc == 0 and r.header() == "jobserver: none (MAKEFLAGS names no jobserver); taking no tokens", r.out
    r = inner.run([], {"MAKEFLAGS": f"n --jobserver-auth=fifo:{s.path}", "INNER_TESTS": "3"})
    assert r.rc == 0 and r.header() == "jobserver: none (MAKEFLAGS says make runs in dry-run mode (-n)); taking no tokens", r.out
    assert s.settled()["counters"]["granted"] == 0


def test_without_xdist_takes_nothing(steved, inner: Inner) -> None:
    s = steved(1)
    inner.add("test_jobs.py")
    r = inner.run([], {"MAKEFLAGS": " " + s.makeflags, "INNER_TESTS": "4"})
    assert r.rc == 0, r.out
    assert r.header() == f"jobserver: fifo:{s.path} (from MAKEFLAGS); no xdist workers: this run is the implicit slot and takes no tokens"
    jobs, collects, _ = parse_log(r.log)
    assert len(jobs) == 4 and all(j.token is None and j.worker == "main" for j in jobs) and collects == [("main", None)]
    assert s.settled()["counters"]["granted"] == 0


# -- crashes ----------------------------------------------------------------------------------


def kill_a_worker(s: Steved, inner: Inner, which: str, workers: int) -> Run:
    """test_kill.py's 12 tests under `-n workers` with steved `s` in MAKEFLAGS: the first test in
    worker gw0 (which="gw0"), or in a worker other than gw0 (which="other"), SIGKILLs its worker."""
    inner.add("test_kill.py")
    env = {"INNER_KILL_WORKER": which, "INNER_TESTS": "12", "MAKEFLAGS": " " + s.makeflags}
    return inner.run(["-n", str(workers), "--max-worker-restart=3"], env)


def test_sigkilled_worker_leaks_no_token(steved, inner: Inner) -> None:
    N, M = 1, 3
    s = steved(N)
    r = kill_a_worker(s, inner, "other", M)
    kills = [l.split() for l in r.log if l.startswith("kill ")]
    assert len(kills) == 1, r.log
    _, killed_test, killed_worker, killed_token = kills[0]
    assert killed_worker != "gw0" and killed_token != "None", "the killed worker must have held a token"
    assert r.rc == 1 and "replacing crashed worker" in r.out, r.out
    assert summary_counts(r.out) == {"failed": 1, "passed": 11}, r.out
    assert re.search(rf"worker '{killed_worker}' crashed while running .*{re.escape(killed_test)}", r.out), r.out
    st = s.settled()
    c = st["counters"]
    assert st["pool"]["free"] == N and st["holders"] == [], st
    # The agent saw EOF and wrote the token back itself: steved had nothing to reclaim.
    assert c["returned"] == c["granted"] and c["reclaimed"] == 0, c
    say(f"SIGKILL of {killed_worker} holding token {killed_token}: {c['granted']} granted, {c['returned']} returned, pool {st['pool']['free']}/{N} free")


@pytest.mark.parametrize("kill_agent", [False, True], ids=["worker", "control-agent-too"])
def test_sigkilled_worker_with_plain_fifo(inner: Inner, tmp_path: Path, kill_agent: bool) -> None:
    """A plain FIFO reclaims nothing by itself: only the agent's EOF handling brings a token back."""
    N = 2
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    keep = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(keep, b"+" * N)
        inner.add("test_kill.py")
        env = {"INNER_KILL_WORKER": "other", "INNER_TESTS": "10", "INNER_KILL_AGENT": "1" if kill_agent else "0"}
        r = inner.run(["-n", "3", "--max-worker-restart=3", "--jobserver", str(fifo)], env)
        assert r.rc == 1 and summary_counts(r.out) == {"failed": 1, "passed": 9}, r.out
        assert inner.leftovers() == []
        back = b""
        while True:
            try:
                chunk = os.read(keep, 64)
            except BlockingIOError:
                break
            back += chunk
    finally:
        os.close(keep)
    if kill_agent:
        assert len(back) == N - 1, f"control: killing the agent too must lose its token, FIFO has {len(back)}"
    else:
        assert len(back) == N, f"FIFO has {len(back)} of {N} tokens after the worker was SIGKILLed"
    say(f"plain FIFO, worker SIGKILLed{' with its agent' if kill_agent else ''}: {len(back)}/{N} tokens back")


def test_crashed_gw0_hands_the_implicit_slot_to_its_replacement(steved, inner: Inner) -> None:
    N, M = 1, 3
    s = steved(N)
    r = kill_a_worker(s, inner, "gw0", M)
    assert r.rc == 1 and "replacing crashed worker gw0" in r.out, r.out
    jobs, collects, _ = parse_log(r.log)
    replacement = {j.worker for j in jobs} - {"gw0", "gw1", "gw2"}
    assert len(replacement) == 1, {j.worker for j in jobs}
    (new,) = replacement
    assert all(j.token is None for j in jobs if j.worker == new), "the replacement of gw0 must take no tokens"
    assert (new, None) in collects
    assert all(j.token is not None for j in jobs if j.worker in ("gw1", "gw2"))
    peak = max_overlap(jobs)
    assert peak <= N + 1, f"peak {peak}"
    st = s.settled()
    tokened = sum(1 for j in jobs if j.worker in ("gw1", "gw2"))
    assert st["counters"]["granted"] == tokened + 2 and st["pool"]["free"] == N, st["counters"]
    say(f"gw0 SIGKILLed, replaced by {new} which took no token; peak {peak} (limit {N}+1); {st['counters']['granted']} granted = {tokened} tests + 2 collections")


def test_jobserver_gone_mid_run_strict_stops_the_run_cleanly(steved, inner: Inner) -> None:
    """--jobserver-strict: steved stops while workers hold and wait for tokens: a clear stop, no hang, no crash."""
    s = steved(1)
    inner.add("test_server_gone.py")
    env = {"MAKEFLAGS": " " + s.makeflags, "INNER_STEVED_PID": str(s.proc.pid), "PYTEST_JOBSERVER_STRICT": "1"}
    r = inner.run(["-n", "3"], env)
    assert [l.split()[0] for l in r.log if l.startswith("stop ")] == ["stop"], r.log
    assert s.proc.poll() is not None, "steved should be gone"
    # xdist's Interrupted (exit 2) with the plugin's reason, and the test that got no token errors.
    assert r.rc == 2, r.out
    assert re.search(rf"Interrupted: jobserver: {re.escape(str(s.path))} \(from MAKEFLAGS\): (cannot take a token|giving (a )?token( \d+)? back failed): ", r.out), r.out
    # No xdist worker died ("node down", "worker 'gw1' crashed while running"); the plugin's own
    # dead-mount words ("steved stopped or crashed") are expected.
    assert "INTERNALERROR" not in r.out and not re.search(r"node down|crashed while running", r.out), r.out
    assert "EBADF" not in r.out, r.out
    m = re.search(r"ERROR at setup of (\S+) _+\n.*\njobserver: .*not running this test without a token", r.out)
    assert m, r.out
    say(f"strict, steved stopped mid-run: exit 2, {m.group(1)} errored with the reason, no INTERNALERROR, no process left")


def test_jobserver_gone_mid_run_goes_on_one_test_at_a_time(steved, inner: Inner) -> None:
    """Default: steved stops mid-run; one warning, then every worker (gw0 too) shares one slot."""
    s = steved(1)
    inner.add("test_server_gone.py")
    env = {"MAKEFLAGS": " " + s.makeflags, "INNER_STEVED_PID": str(s.proc.pid)}
    r = inner.run(["-n", "3"], env)
    assert [l.split()[0] for l in r.log if l.startswith("stop ")] == ["stop"], r.log
    assert s.proc.poll() is not None, "steved should be gone"
    assert r.rc == 0 and summary_counts(r.out) == {"passed": 12}, r.out
    assert "INTERNALERROR" not in r.out and "Interrupted" not in r.out, r.out
    warned = [l for l in r.out.splitlines() if l.startswith("WARNING: jobserver lost in the middle of the run: ")]
    assert len(warned) == 1, r.out
    assert re.match(rf"WARNING: jobserver lost in the middle of the run: {re.escape(str(s.path))} \(from MAKEFLAGS\): ", warned[0])
    jobs, _, unfinished = parse_log(r.log)
    assert len(jobs) == 12 and not unfinished
    ran_in = slots(r.log)
    shared = [j for j in jobs if ran_in.get(j.name) == "shared"]
    # The tests after the loss, in more than one worker, never overlapped: one shared slot.
    assert len({j.worker for j in shared}) >= 2, ran_in
    assert max_overlap(shared) == 1, [(j.name, j.worker, j.start, j.end) for j in shared]
    m = re.search(r"after the jobserver was lost, (\d+) ran one at a time", r.out)
    assert m and int(m.group(1)) == len(shared), r.out
    say(f"steved stopped mid-run: exit 0, one warning, {len(shared)} tests in {len({j.worker for j in shared})} workers then ran one at a time (peak 1)")


def test_ctrl_c_gives_every_token_back(steved, inner: Inner) -> None:
    """SIGINT to pytest's process group (Ctrl-C) while workers hold and wait for tokens."""
    N = 2
    s = steved(N)
    inner.add("test_jobs.py")
    proc = inner.start(["-n", "4"], {"MAKEFLAGS": " " + s.makeflags, "INNER_TESTS": "40", "INNER_SECONDS": "3"})
    try:
        # Both tokens out (two tests of gw1..gw3 running) and so workers are waiting.
        def tokened_running(lines: list[str]) -> int:
            tok = [l.split()[0] for l in lines if l.split()[-1] != "None" and l.split()[0] in ("start", "end")]
            return tok.count("start") - tok.count("end")

        inner.wait_log(lambda lines: tokened_running(lines) >= N)
        held = s.status()
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = (inner.tmp / "started.out").read_text()
    assert rc == 2 and "KeyboardInterrupt" in out, out
    assert held["pool"]["held"] >= 1 and held["holders"], held
    assert inner.leftovers() == []
    st = s.settled()
    c = st["counters"]
    assert st["pool"]["free"] == N and st["holders"] == [] and c["returned"] == c["granted"], st
    say(f"Ctrl-C with {held['pool']['held']}/{N} tokens held by {len(held['holders'])} agents: exit 2; {c['granted']} granted, {c['returned']} returned, all {N} free")


# -- errors -----------------------------------------------------------------------------------


def test_pipe_jobserver_under_xdist_runs_one_at_a_time(inner: Inner, tmp_path: Path) -> None:
    """make --jobserver-style=pipe hands `--jobserver-auth=R,W` (fds) to a '+' recipe."""
    inner.add("test_jobs.py")
    py = subprocess.list2cmdline([sys.executable])
    (tmp_path / "Makefile").write_text(
        "all: xdist strict plain\n"
        f"xdist:\n\t+INNER_LOG=$(CURDIR)/xdist.log {py} -m pytest -p no:cacheprovider -n 2 -p jobserver > xdist.out 2>&1; echo $$? > xdist.rc\n"
        f"strict:\n\t+{py} -m pytest -p no:cacheprovider -n 2 -p jobserver --jobserver-strict > strict.out 2>&1; echo $$? > strict.rc\n"
        f"plain:\n\t+{py} -m pytest -p no:cacheprovider -p jobserver > plain.out 2>&1; echo $$? > plain.rc\n"
    )
    r = inner.run(["-j2", "--jobserver-style=pipe", "-f", str(tmp_path / "Makefile")], {"INNER_TESTS": "3"}, argv0=[make44()])
    assert r.rc == 0, r.out
    out = {k: (inner.dir / f"{k}.out").read_text() for k in ("xdist", "strict", "plain")}
    rc = {k: (inner.dir / f"{k}.rc").read_text().strip() for k in out}
    # Default: the warning, then one worker in the recipe's implicit slot.
    assert rc["xdist"] == "0", out["xdist"]
    w = fallback_warning(out["xdist"])
    assert re.search(r"MAKEFLAGS names a pipe jobserver \(pipe on inherited file descriptor \d+\), and xdist workers start with inherited file descriptors closed; use a named one", w), w
    assert "created: 1/1 worker" in out["xdist"] and summary_counts(out["xdist"]) == {"passed": 3}, out["xdist"]
    jobs, _, _ = parse_log((inner.dir / "xdist.log").read_text().splitlines())
    assert len(jobs) == 3 and max_overlap(jobs) == 1 and {j.worker for j in jobs} == {"gw0"}
    # --jobserver-strict: today's usage error.
    assert rc["strict"] == "4", out["strict"]
    m = re.search(r"ERROR: jobserver: MAKEFLAGS names a pipe jobserver \(pipe on inherited file descriptor (\d+)\), and pytest-xdist workers cannot use one", out["strict"])
    assert m, out["strict"]
    assert "--jobserver-style=fifo" in out["strict"] and "run without -n" in out["strict"]
    assert rc["plain"] == "0", out["plain"]
    assert re.search(r"^jobserver: pipe on inherited file descriptor \d+ \(from MAKEFLAGS\); no xdist workers", out["plain"], re.M), out["plain"]
    say(f"pipe jobserver (fd {m.group(1)}) under -n 2: one warning, exit 0 with one worker; strict: exit 4; without -n: exit 0")


@pytest.mark.parametrize("case", ["missing-path", "regular-file", "makeflags-missing", "no-agent", "not-a-pipe"])
def test_unusable_jobserver_warns_and_runs_one_at_a_time(inner: Inner, tmp_path: Path, case: str) -> None:
    inner.add("test_jobs.py")
    env = {"INNER_TESTS": "3"}
    args = ["-n", "2"]
    if case == "missing-path":
        args += ["--jobserver", str(tmp_path / "nowhere" / "js")]
        strict = rf"ERROR: jobserver: cannot use the jobserver named by --jobserver: {tmp_path}/nowhere/js does not exist; start steved, or use the path it serves \[ENOENT\]"
        warn = rf"{tmp_path}/nowhere/js does not exist \(from --jobserver\); start steved, or use the path it serves\."
    elif case == "regular-file":
        (tmp_path / "plain").write_text("x")
        env["PYTEST_JOBSERVER"] = str(tmp_path / "plain")
        strict = rf"ERROR: jobserver: cannot use the jobserver named by PYTEST_JOBSERVER: {tmp_path}/plain is not a jobserver \(not a FIFO, a character device or a file steved serves\); start steved, or use the path it serves \[ERR_JOBSERVER_NOT_FIFO\]"
        warn = rf"{tmp_path}/plain is not a jobserver \(not a FIFO, a character device or a file steved serves\) \(from PYTEST_JOBSERVER\); start steved, or use the path it serves\."
    elif case == "makeflags-missing":
        env["MAKEFLAGS"] = f" -j4 --jobserver-auth=fifo:{tmp_path}/gone"
        strict = rf"ERROR: jobserver: cannot use the jobserver named by MAKEFLAGS: {tmp_path}/gone does not exist; start steved, or use the path it serves \[ENOENT\]"
        warn = rf"{tmp_path}/gone does not exist \(from MAKEFLAGS\); start steved, or use the path it serves\."
    elif case == "no-agent":
        os.mkfifo(tmp_path / "fifo")
        args += ["--jobserver", str(tmp_path / "fifo")]
        env["PYTEST_JOBSERVER_AGENT"] = str(tmp_path / "no-such-jobclient")
        strict = r"ERROR: jobserver: cannot use the jobserver named by --jobserver: PYTEST_JOBSERVER_AGENT=.*is not an executable file \[ERR_AGENT_NOT_FOUND\]"
        warn = r"PYTEST_JOBSERVER_AGENT=.*is not an executable file \[ERR_AGENT_NOT_FOUND\]; install it: npm install -g \./jobclient-VERSION\.tgz .*emerge dev-build/steved"
    else:  # fds that are not open here (make 4.3 leaves such numbers behind)
        env["MAKEFLAGS"] = " -j4 --jobserver-auth=7,8"
        strict = r"ERROR: jobserver: MAKEFLAGS names a pipe jobserver \(jobserver (read|write) fd [78] is not a pipe"
        warn = r"MAKEFLAGS names a pipe jobserver \(jobserver (read|write) fd [78] is not a pipe.*, and xdist workers start with inherited file descriptors closed; use a named one"
    # --jobserver-strict (or PYTEST_JOBSERVER_STRICT=1): a usage error before any test runs.
    for how in (["--jobserver-strict"], []):
        r = inner.run(args + how, {**env, **({} if how else {"PYTEST_JOBSERVER_STRICT": "1"})})
        assert r.rc == 4, r.out
        assert re.search(strict, r.out), r.out
        error = [l for l in r.out.splitlines() if l.startswith("ERROR")][0]
        assert error.count("start steved") <= 1, f"what to do, said once: {error}"
        assert "collected" not in r.out and not r.log, "no test may run"
    say(f"{case}, strict: exit 4: {[l for l in r.out.splitlines() if l.startswith('ERROR')][0]}")
    # Default: one warning line that says why and what to do, then the run goes on like make -j1.
    r = inner.run(args, env)
    w = fallback_warning(r.out)
    assert re.search(warn, w), w
    assert_ran_one_at_a_time(r, 3)
    say(f"{case}, default: exit 0, 3 tests one at a time in gw0: {w}")
    # Without xdist there is nothing to take: the run goes on and the header says what is wrong.
    if case in ("missing-path", "regular-file", "makeflags-missing"):
        r = inner.run([a for a in args if a not in ("-n", "2")], env)
        assert r.rc == 0, r.out
        assert re.match(r"jobserver: .* names a jobserver that cannot be used: .*; no xdist workers, so no tokens are needed", r.header()), r.header()
        assert FALLBACK not in r.out


@pytest.mark.parametrize("how", ["stopped", "crashed"])
def test_stopped_or_crashed_steved_warns_and_runs_one_at_a_time(steved, inner: Inner, how: str) -> None:
    """steved stopped (SIGTERM: it unmounts, leaving its 0-byte file) or crashed (SIGKILL: a dead mount)."""
    s = steved(2)
    inner.add("test_jobs.py")
    s.proc.send_signal(signal.SIGTERM if how == "stopped" else signal.SIGKILL)
    s.proc.wait(30)
    if how == "stopped":
        st = os.stat(s.path)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0, "steved leaves an empty regular file"
        warn = rf"{re.escape(str(s.path))} \(from MAKEFLAGS\) is an empty regular file: the FUSE server that serves it \(steved\) is not running; start steved\."
        code = "ERR_JOBSERVER_NOT_FIFO"
    else:
        with pytest.raises(OSError) as e:
            os.stat(s.path)
        assert e.value.errno == errno.ENOTCONN
        warn = rf"{re.escape(str(s.path))} is a dead steved mount \(steved stopped or crashed\) \(from MAKEFLAGS\); start steved again; it clears the dead mount"
        code = "ENOTCONN"
    env = {"MAKEFLAGS": " " + s.makeflags, "INNER_TESTS": "4"}
    # No -p jobserver: the plugin autoloads, as it does for every pytest in the venv.
    r = inner.run(["-n", "3"], env)
    w = fallback_warning(r.out)
    assert re.search(warn, w), w
    assert_ran_one_at_a_time(r, 4)
    r = inner.run(["-n", "3", "--jobserver-strict"], env)
    assert r.rc == 4 and f"[{code}]" in r.out and not r.log, r.out
    say(f"steved {how}: exit 0 with one warning and 4 tests one at a time; strict: exit 4 [{code}]")


def test_stopped_jobserver_warns_after_the_timeout(steved, inner: Inner) -> None:
    # Note the `--jobserver=PATH` form: pytest itself stats every command-line word that does
    # not start with "-" (looking for its rootdir), so `--jobserver PATH` with a stopped
    # server hangs inside pytest before any plugin runs.
    s = steved(2)
    inner.add("test_jobs.py")
    os.kill(s.proc.pid, signal.SIGSTOP)
    runs = []
    try:
        for args, env, source in [
            ([f"--jobserver={s.path}", "--jobserver-timeout=3"], {}, "--jobserver"),
            ([], {"PYTEST_JOBSERVER": str(s.path), "PYTEST_JOBSERVER_TIMEOUT": "3"}, "PYTEST_JOBSERVER"),
        ]:
            for strict in (True, False):
                extra = {"PYTEST_JOBSERVER_STRICT": "1"} if strict else {}
                runs.append((inner.run(["-n", "2"] + args, {"INNER_TESTS": "2", **env, **extra}), source, strict))
                assert inner.leftovers() == [], "the agent stuck in open() must be gone"
    finally:
        os.kill(s.proc.pid, signal.SIGCONT)
    for r, source, strict in runs:
        if strict:
            assert r.rc == 4, r.out
            assert (
                f"ERROR: jobserver: cannot use the jobserver named by {source}: the jobserver did not answer within 3 s: "
                "opening it hangs (is its server stopped or stuck?)" in r.out
            ), r.out
            assert not r.log
        else:
            w = fallback_warning(r.out)
            assert f"opening {s.path} (from {source}) hangs: its server is stopped or stuck; resume or restart it" in w, w
            assert_ran_one_at_a_time(r, 2)
    st = s.settled()
    assert st["pool"]["free"] == 2 and st["counters"]["granted"] == 0
    say("SIGSTOPped steved, timeout 3 s (option and environment): strict exit 4; default one warning and the tests one at a time; the agent killed, nothing held")


# -- fixture, sources, loading ----------------------------------------------------------------


def test_jobserver_token_fixture(steved, inner: Inner) -> None:
    s = steved(2)
    inner.add("test_fixture.py")
    env = {"INNER_STEVECTL": subprocess.list2cmdline(STEVECTL), "INNER_JOBSERVER": str(s.path)}
    r = inner.run(["-n", "3", "--jobserver", str(s.path)], env)
    assert r.rc == 0 and summary_counts(r.out) == {"passed": 6}, r.out
    jobs, _, _ = parse_log(r.log)
    ids = sorted(j.token for j in jobs if j.token is not None)
    assert ids and all(t >= 1 for t in ids)
    r = inner.run(["--jobserver", str(s.path)], env)
    assert r.rc == 0 and summary_counts(r.out) == {"passed": 6}, r.out
    say(f"jobserver_token: ids {ids} in gw1/gw2 matched steved's holders (the worker's agent, 1 token); None in gw0 and without xdist")


def test_where_the_jobserver_comes_from(steved, inner: Inner, tmp_path: Path) -> None:
    a, b = steved(1, "a"), steved(1, "b")
    inner.add("test_jobs.py")
    gone = f" --jobserver-auth=fifo:{tmp_path}/gone"
    cases = [
        (["--jobserver", str(a.path)], {"PYTEST_JOBSERVER": str(b.path), "MAKEFLAGS": gone}, a, "--jobserver"),
        (["--jobserver", f"fifo:{a.path}"], {}, a, "--jobserver"),
        ([], {"PYTEST_JOBSERVER": str(b.path), "MAKEFLAGS": gone}, b, "PYTEST_JOBSERVER"),
        ([], {"CARGO_MAKEFLAGS": " -j2 " + a.makeflags, "MAKEFLAGS": gone}, a, "CARGO_MAKEFLAGS"),
        ([], {"MAKEFLAGS": " " + b.makeflags, "MFLAGS": gone}, b, "MAKEFLAGS"),
        ([], {"MFLAGS": " " + a.makeflags}, a, "MFLAGS"),
        # make's last --jobserver-auth wins; the agent parses it
        ([], {"MAKEFLAGS": f" --jobserver-auth=fifo:{tmp_path}/gone --jobserver-auth=fifo:{b.path}"}, b, "MAKEFLAGS"),
    ]
    for args, env, want, source in cases:
        r = inner.run(args + ["-n", "2"], {"INNER_TESTS": "2", **env})
        assert r.rc == 0, r.out
        assert r.header().startswith(f"jobserver: fifo:{want.path} (from {source});"), (args, env, r.header())
    ga, gb = a.settled()["counters"]["granted"], b.settled()["counters"]["granted"]
    # each run: gw1 collects (1 token) and runs its share of 2 tests
    assert ga >= 4 and gb >= 3, (ga, gb)
    say(f"sources: --jobserver > PYTEST_JOBSERVER > CARGO_MAKEFLAGS > MAKEFLAGS > MFLAGS; tokens granted a={ga} b={gb}")


def test_autoload_disabled_needs_p_jobserver(steved, inner: Inner) -> None:
    """Gentoo's way: PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 and `-p jobserver` (EPYTEST_FLAGS)."""
    s = steved(1)
    inner.add("test_jobs.py")
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "MAKEFLAGS": " " + s.makeflags, "INNER_TESTS": "4"}
    r = inner.run(["-p", "xdist", "-p", "jobserver", "-n", "3", "-k", "test_job"], env)
    assert r.rc == 0, r.out
    assert r.header().startswith(f"jobserver: fifo:{s.path} (from MAKEFLAGS); each xdist worker")
    granted = s.settled()["counters"]["granted"]
    assert granted >= 2, granted  # gw1 and gw2 collected with a token
    # Without -p jobserver nothing loads it: no header, the fixture is unknown.
    r = inner.run(["-p", "xdist", "-n", "2"], env)
    assert r.rc == 1 and "fixture 'jobserver_token' not found" in r.out and "jobserver:" not in r.out, r.out
    assert s.settled()["counters"]["granted"] == granted
    say(f"autoload off: -p jobserver loads the plugin ({granted} tokens); without it nothing is taken")


def test_agent_is_found_on_path(steved, inner: Inner, tmp_path: Path) -> None:
    """Installed setups have `jobclient` on PATH; PYTEST_JOBSERVER_AGENT is for development."""
    s = steved(1)
    inner.add("test_jobs.py")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "jobclient"
    used = tmp_path / "wrapper-used"
    wrapper.write_text(f"#!/bin/sh\necho \"$@\" >> {used}\nexec {subprocess.list2cmdline(JOBCLIENT)} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = dict(inner.env)
    del env["PYTEST_JOBSERVER_AGENT"]
    env.update({"PATH": f"{bindir}:{env['PATH']}", "INNER_TESTS": "4", "MAKEFLAGS": " " + s.makeflags})
    inner.env = env
    r = inner.run(["-n", "2"])
    assert r.rc == 0, r.out
    st = s.settled()
    assert st["counters"]["granted"] >= 1 and st["pool"]["free"] == 1
    # the controller's check and gw1's agent came through the wrapper on PATH
    assert used.read_text().splitlines() == ["agent", f"agent --jobserver {s.path}"], used.read_text()
