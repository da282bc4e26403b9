"""Many STATUS readers (issue 14): N client processes each hold a token (so the status lists
them, each with an 8 KB command line) and fetch chunk 0 of the status document without ever
reading on. Before the snapshot store was bounded every one of them kept a full snapshot until
it exited. Reported per N: steved's RSS before and after the fetches, the snapshots kept, and
the round trip of 8 other clients doing acquire+release (does everyone else pay for the
readers?). Run alone: python bench/py/status_readers.py --work DIR [--quick] [--steved BIN],
which merges the rows into bench/results/scale.json.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Ctx, Steved, rt_8_clients, script_tree, steved_helpers  # noqa: E402

WHAT = __doc__.strip().split("\n\n")[0]
CTL = common.ROOT / "packages" / "steved" / "bin" / "stevectl.js"

# Forks N children: each takes a token, says "h", waits for "go", fetches chunk 0 of the status,
# says "f", and stays. The parent prints "held" and "fetched".
READERS = r"""
import fcntl, os, struct, sys, time
path, n = sys.argv[1], int(sys.argv[2])
STATUS = (3 << 30) | (8192 << 16) | (ord("j") << 8) | 0x03
up_r, up_w = os.pipe()
go_r, go_w = os.pipe()
for i in range(n):
    if os.fork() == 0:
        fd = os.open(path, os.O_RDWR)
        os.read(fd, 1)
        os.write(up_w, b"h")
        os.read(go_r, 1)
        buf = bytearray(struct.pack("<I", 0) + bytes(8188))
        try:
            fcntl.ioctl(fd, STATUS, buf)
        except OSError:
            pass
        os.write(up_w, b"f")
        time.sleep(3600)
        os._exit(0)
for _ in range(n):
    os.read(up_r, 1)
print("held", flush=True)
sys.stdin.readline()
os.write(go_w, b"g" * n)
for _ in range(n):
    os.read(up_r, 1)
print("fetched", flush=True)
time.sleep(3600)
"""


def snapshots(path: str):
    try:
        return steved_helpers.status(path, ["node", str(CTL)]).get("server", {}).get("statusSnapshots")
    except RuntimeError:
        return None


def run_status_readers(ctx: Ctx) -> list:
    rows = []
    for n in (0, 100) if ctx.quick else (0, 100, 400):
        with Steved(ctx, 8 + n, False, name=f"steved-readers-{n}") as s, script_tree(READERS, s.path, str(n), "x" * 8000) as readers:
            assert readers.stdout.readline().strip() == "held"
            time.sleep(0.5)
            before = s.memory_kib()
            readers.stdin.write("go\n")
            readers.stdin.flush()
            assert readers.stdout.readline().strip() == "fetched"
            after = s.memory_kib()
            kept = snapshots(s.path)
            rows.append({
                "readers": n,
                "rss_kib_before_fetch": before["VmRSS"],
                "rss_kib_after_fetch": after["VmRSS"],
                "rss_growth_kib": after["VmRSS"] - before["VmRSS"],
                "snapshots_kept": kept,
                "rt_8_clients": rt_8_clients(ctx, s.path),
            })
        ctx.say(f"scale: {n} status readers done")
    return rows


if __name__ == "__main__":
    common.scale_case_main(
        {"status_readers": (WHAT, run_status_readers)},
        "where in scale.json's status_readers to put them (rows_unbounded for a steved before the bound)",
    )
