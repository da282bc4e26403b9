"""Many capped waiters (issue 14): a process tree in a group capped at one token holds that token
while N of its processes park a blocking read (every one of them is capped), and 8 other clients
do acquire+release. Each release asks steved whom to serve next; before the wait queue was
restructured that meant looking at every capped waiter (and counting the group's tokens for
each), so everyone's round trip grew with N. Reported per N: the 8 clients' median and p99 round
trip. Also many early returners (run_early_returners). Run alone: python
bench/py/capped_waiters.py --work DIR [--quick] [--steved BIN] [--key K], which merges the rows
of both into bench/results/scale.json (--key rows_before with --steved of a checkout before the
change, for the comparison).
"""

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Ctx, Steved, rt_8_clients, script_tree  # noqa: E402

WHAT = __doc__.strip().split("\n\n")[0]

# The group root: prints its pid, waits for "go" (it is in the group by then), takes the group's
# one token, forks N children that each park a blocking read, and says "parked" once all have
# opened the file (steved's status confirms they wait).
TREE = r"""
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
print(os.getpid(), flush=True)
sys.stdin.readline()
fd = os.open(path, os.O_RDWR)
os.read(fd, 1)
up_r, up_w = os.pipe()
for i in range(n):
    if os.fork() == 0:
        f = os.open(path, os.O_RDONLY)
        os.write(up_w, b"o")
        os.read(f, 1)
        time.sleep(3600)
        os._exit(0)
for _ in range(n):
    os.read(up_r, 1)
print("parked", flush=True)
time.sleep(3600)
"""


# N processes that never read each write one byte (an early return), then wait.
EARLY = r"""
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
up_r, up_w = os.pipe()
for i in range(n):
    if os.fork() == 0:
        f = os.open(path, os.O_WRONLY)
        try:
            os.write(f, b"+")
        except OSError:
            pass
        os.write(up_w, b"w")
        time.sleep(3600)
        os._exit(0)
for _ in range(n):
    os.read(up_r, 1)
print("written", flush=True)
time.sleep(3600)
"""
EARLY_WHAT = ("Many early returners: N processes that never read each write one byte to steved -j 8, then 8 clients do "
              "acquire+release; free tokens are read from the status document (a pool inflated by early returns has more than 8)")


def run_early_returners(ctx: Ctx) -> list:
    rows = []
    for n in (0, 100) if ctx.quick else (0, 100, 1000):
        with Steved(ctx, 8, False, name=f"steved-early-{n}") as s, script_tree(EARLY, s.path, str(n)) as procs:
            assert procs.stdout.readline().strip() == "written"
            free = s.status()["pool"]["free"]
            rows.append({"early_returners": n, "free_tokens_after": free, "rt_8_clients": rt_8_clients(ctx, s.path)})
        ctx.say(f"scale: {n} early returners done")
    return rows


def run_capped_waiters(ctx: Ctx) -> list:
    rows = []
    for n in (0, 100, 300) if ctx.quick else (0, 100, 300, 1000):
        with Steved(ctx, 9, False, name=f"steved-capped-{n}") as s, script_tree(TREE, s.path, str(n)) as tree:
            root = int(tree.stdout.readline())
            subprocess.run(common.stevectl() + ["--device", s.path, "group", "join", "capped", str(root), "1"], check=True,
                           capture_output=True, timeout=60)
            tree.stdin.write("go\n")
            tree.stdin.flush()
            assert tree.stdout.readline().strip() == "parked"
            deadline = time.monotonic() + 60
            while True:
                capped = sum(1 for w in s.status()["waiters"] if w["reason"] == "group-limit")
                if capped >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            rows.append({"capped_waiters": n, "capped_waiters_seen": capped, "rt_8_clients": rt_8_clients(ctx, s.path)})
        ctx.say(f"scale: {n} capped waiters done")
    return rows


if __name__ == "__main__":
    common.scale_case_main(
        {"capped_waiters": (WHAT, run_capped_waiters), "early_returners": (EARLY_WHAT, run_early_returners)},
        "where in scale.json's capped_waiters to put them (rows_before for a steved before the change)",
    )
