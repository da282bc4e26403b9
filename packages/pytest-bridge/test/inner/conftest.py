"""Inner suite helpers: tests record when they run, in which worker, with which token.

Log lines (appended with O_APPEND, so lines from concurrent workers never mix):
    start NAME MONOTONIC_NS WORKER TOKEN
    end NAME MONOTONIC_NS WORKER TOKEN
    collect WORKER TOKEN              written while the worker collects
    kill NAME WORKER TOKEN            written just before a test kills its worker
    slot NAME WORKER SLOT             what the test ran in (plugin.held_slot: token, implicit, shared)
TOKEN is what the plugin says this process holds (None: implicit slot or no jobserver).
"""

import os
import time
from pathlib import Path

import pytest

LOG = os.environ["INNER_LOG"]
DIR = Path(os.environ["INNER_DIR"])


def record(*words):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(str(w) for w in words) + "\n").encode())
    finally:
        os.close(fd)


def first(flag):
    """True in the one process that gets here first (of all workers): it creates DIR/flag-FLAG."""
    try:
        fd = os.open(DIR / f"flag-{flag}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def worker():
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def held(config):
    try:
        from pytest_steved_jobserver.plugin import held_token
    except ImportError:
        return None
    return held_token(config)


def slot(config):
    try:
        from pytest_steved_jobserver.plugin import held_slot
    except ImportError:
        return None
    return held_slot(config)


def pytest_collection_finish(session):
    record("collect", worker(), held(session.config))


def running_now():
    starts = ends = 0
    with open(LOG) as f:
        for line in f:
            starts += line.startswith("start ")
            ends += line.startswith("end ")
    return starts - ends


def barrier(k):
    """Wait until, at some moment, k tests ran at once (so a run that can reach k does)."""
    flag = DIR / f"flag-barrier-{k}"
    if running_now() >= k:
        flag.touch()
    deadline = time.monotonic() + 120
    while not flag.exists():
        if time.monotonic() > deadline:
            # Fail the run's check (the outer test looks for this line), and wait no more.
            record("barrier-timeout", worker())
            flag.touch()
            return
        time.sleep(0.005)


@pytest.fixture
def job(request, jobserver_token):
    """Record this test's start and end (inside setup..teardown, where the token is held)."""

    def run(seconds):
        name = request.node.name
        record("slot", name, worker(), slot(request.config))
        record("start", name, time.monotonic_ns(), worker(), jobserver_token)
        k = int(os.environ.get("INNER_BARRIER", "0"))
        if k:
            barrier(k)
        time.sleep(seconds)
        record("end", name, time.monotonic_ns(), worker(), jobserver_token)

    return run
