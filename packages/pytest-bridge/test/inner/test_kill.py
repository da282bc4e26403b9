"""One test kills its own worker (SIGKILL) while the worker holds a token.

INNER_KILL_WORKER: "gw0" kills the first worker that is gw0, "other" the first that is not.
INNER_KILL_AGENT=1: SIGKILL the worker's jobclient agent first (a control: then a plain FIFO
does lose the token, which shows the suite can see a leak).
"""

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import first, record, worker


def _agent_children():
    me = str(os.getpid())
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmdline = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = stat.rsplit(")", 1)[1].split()[1]
        if ppid == me and b"agent" in cmdline:
            pids.append(int(d))
    return pids


@pytest.mark.parametrize("i", range(int(os.environ.get("INNER_TESTS", "12"))))
def test_maybe_kill(i, job, jobserver_token):
    want = os.environ["INNER_KILL_WORKER"]
    mine = worker() == "gw0" if want == "gw0" else worker() != "gw0"
    if mine and first("killed"):
        record("kill", f"test_maybe_kill[{i}]", worker(), jobserver_token)
        if os.environ.get("INNER_KILL_AGENT") == "1":
            agents = _agent_children()
            assert len(agents) == 1, agents
            os.kill(agents[0], signal.SIGKILL)
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    job(0.1)
