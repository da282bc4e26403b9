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

# N children each hold a token, then fetch chunk 0 of the status and never read on (the same
# program hostile-control.test.ts runs: its docstring).
READERS = (common.ROOT / "test" / "helpers" / "stalled_status_readers.py").read_text()


def snapshots(path: str):
    try:
        return steved_helpers.status(path, ["node", str(CTL)]).get("server", {}).get("statusSnapshots")
    except RuntimeError:
        return None


def run_status_readers(ctx: Ctx) -> list:
    rows = []
    for n in (0, 100) if ctx.quick else (0, 100, 400):
        with Steved(ctx, 8 + n, False, name=f"steved-readers-{n}") as s, script_tree(READERS, s.path, str(n), "hold", "x" * 8000) as readers:
            assert readers.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            before = s.memory_kib()
            readers.stdin.write("go\n")
            readers.stdin.flush()
            assert readers.stdout.readline().startswith("fetched ")
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
