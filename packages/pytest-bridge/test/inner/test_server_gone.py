"""The jobserver goes away in the middle of the run: the first test in a worker other than
gw0 stops steved (SIGTERM: it unmounts its file and exits) while it holds a token."""

import os
import signal
import time

import pytest
from conftest import first, record, worker


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("i", range(12))
def test_maybe_stop_server(i, job, jobserver_token):
    if worker() != "gw0" and first("stopped"):
        record("stop", f"test_maybe_stop_server[{i}]", worker(), jobserver_token)
        pid = int(os.environ["INNER_STEVED_PID"])
        os.kill(pid, signal.SIGTERM)
        # steved is the outer test's child: gone once it is a zombie (or reaped).
        while _alive(pid):
            time.sleep(0.01)
    job(0.2)
