"""A recorder loaded with `-p jobrecorder` around a third-party suite (whose files stay untouched).

Every test appends `start|end NODEID MONOTONIC_NS WORKER` to $JOBRECORDER_LOG (O_APPEND: lines
from concurrent workers never mix), from inside the test process, so the outer test computes
how many tests really ran at once. The interval lies within the time the jobserver plugin holds
this test's token (its hook wraps this one). $JOBRECORDER_PAD_MS makes every test that long at
least, so that without a jobserver the workers visibly overlap.
"""

import os
import time

import pytest


def _record(*words):
    fd = os.open(os.environ["JOBRECORDER_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(str(w) for w in words) + "\n").encode())
    finally:
        os.close(fd)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = item.nodeid.replace(" ", "_")
    _record("start", name, time.monotonic_ns(), worker)
    pad = float(os.environ.get("JOBRECORDER_PAD_MS", "0")) / 1000
    t0 = time.monotonic()
    try:
        yield
    finally:
        left = pad - (time.monotonic() - t0)
        if left > 0:
            time.sleep(left)
        _record("end", name, time.monotonic_ns(), worker)
