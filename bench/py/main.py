"""Run the benchmarks: python bench/py/main.py --work DIR --out DIR [--quick] [SECTION...]

SECTION: transport, scheduling, reclaim, scale, report (default: all, in that order). The
report step reads the JSON files in --out, draws the plots and writes summary.md. ninja (released
ninja through `jobclient fifo`, bench/py/ninja.py) runs only when named; it writes ninja.json
and ninja.md. realbuilds (concurrent real C++ builds under -jN, -jN -lN, a FIFO, steved and steved
with pressure admission, with and without a memory limit, bench/py/realbuilds.py) also runs only
when named; it writes realbuilds.json, realbuilds.md and realbuilds.png.
"""

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

SECTIONS = ("transport", "scheduling", "reclaim", "scale", "report")
ON_REQUEST = ("ninja", "realbuilds")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--update-readme", action="store_true", help="rewrite the generated block of README.md's Benchmarks section")
    ap.add_argument("sections", nargs="*")
    # SIGTERM (bench/run.sh's trap) unwinds like Ctrl-C, so every `with server` and `finally`
    # stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    a = ap.parse_args()
    bad = [s for s in a.sections if s not in SECTIONS + ON_REQUEST]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    a.out.mkdir(parents=True, exist_ok=True)
    ctx = common.Ctx(work=a.work, out=a.out, quick=a.quick)
    for s in a.sections or SECTIONS:
        t = time.monotonic()
        ctx.say(f"== {s}")
        if s == "transport":
            import transport as m
        elif s == "scheduling":
            import scheduling as m
        elif s == "reclaim":
            import reclaim as m
        elif s == "scale":
            import scale as m
        elif s == "ninja":
            import ninja as m
        elif s == "realbuilds":
            import realbuilds as m
        else:
            import report as m
        if s == "report":
            m.run(ctx, update=a.update_readme)
        else:
            m.run(ctx)
        ctx.say(f"== {s} took {time.monotonic() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
