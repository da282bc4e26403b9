"""jobserver_token is the token this worker's agent holds for this very test."""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import worker


def _children():
    me = str(os.getpid())
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    out.add(int(d))
            except OSError:
                pass
    return out


def _holders():
    cmd = shlex.split(os.environ["INNER_STEVECTL"]) + ["--device", os.environ["INNER_JOBSERVER"], "status", "--json"]
    st = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return {h["pid"]: h["tokens"] for h in st["holders"]}


@pytest.mark.parametrize("i", range(6))
def test_token(i, jobserver_token, job):
    holders = _holders()
    mine = {pid: n for pid, n in holders.items() if pid in _children()}
    if worker() in ("gw0", "main"):
        assert jobserver_token is None
        assert mine == {}, f"{worker()} should hold nothing, steved says {holders}"
    else:
        assert isinstance(jobserver_token, int) and jobserver_token >= 1
        # Exactly one process holds tokens for this worker: its agent, with exactly this one.
        assert list(mine.values()) == [1], f"{worker()}: steved says {holders}, children {_children()}"
    job(0.05)
