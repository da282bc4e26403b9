"""Released ninja 1.13 on the pool through `jobclient fifo`, for several tokens-ahead K.

ninja 1.13 tries one non-blocking read of the jobserver only when one of its own jobs ends.
The bridge keeps K bytes in its private pipe: an empty pipe at that moment costs ninja a job,
and each byte waiting there is a token no one else can use. Measured here, for each K:

  alone      ninja by itself on steved -j P: achieved parallelism (job-seconds / wall time),
             peak jobs at once, and the mean number of bytes idle in the pipe;
  contended  the same ninja and a GNU make 4.4 build of the same jobs, started together on the
             same pool: the parallelism each achieves while both run, and the idle bytes.

Baseline: the same ninja (and make) on a plain named pipe holding P tokens, the pool ninja
was written for. Jobs are sleeps of 100-300 ms (deterministic on a busy 2-core machine), each
logging its start and end. Results: bench/results/ninja.json and ninja.md.
"""

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import common

NINJA = common.ROOT / ".venv" / "bin" / "ninja"
JOBCLIENT = common.ROOT / "packages" / "jobclient" / "bin" / "jobclient.js"
POOL = 4
K_VALUES = (0, 1, 2, 3, 4)


def durations(n: int) -> list:
    # A fixed spread of job lengths (ms), the same for every run.
    return [100 + (i * 37) % 201 for i in range(n)]


def write_ninja(d: Path, log: Path, ms: list) -> None:
    d.mkdir(parents=True, exist_ok=True)
    lines = [
        "rule job",
        f'  command = echo "start $out $$(date +%s%N)" >> {log}; sleep $secs; echo "end $out $$(date +%s%N)" >> {log}; touch $out',
    ]
    for i, m in enumerate(ms):
        lines += [f"build n{i}: job", f"  secs = {m / 1000:.3f}"]
    (d / "build.ninja").write_text("\n".join(lines) + "\n")


def write_make(d: Path, log: Path, ms: list) -> None:
    d.mkdir(parents=True, exist_ok=True)
    names = [f"m{i}" for i in range(len(ms))]
    rules = [f"all: {' '.join(names)}", f".PHONY: all {' '.join(names)}"]
    for n, m in zip(names, ms):
        rules.append(f"{n}:\n\t@echo \"start $@ $$(date +%s%N)\" >> {log}; sleep {m / 1000:.3f}; echo \"end $@ $$(date +%s%N)\" >> {log}")
    (d / "Makefile").write_text("\n".join(rules) + "\n")


def parse(log: Path) -> list:
    starts, jobs = {}, []
    if not log.exists():
        return jobs
    for line in log.read_text().splitlines():
        kind, name, ns = line.split()
        if kind == "start":
            starts[name] = int(ns) / 1e9
        else:
            jobs.append((starts.pop(name), int(ns) / 1e9))
    return jobs


def peak(jobs: list) -> int:
    ev = sorted([(s, 1) for s, _ in jobs] + [(e, -1) for _, e in jobs], key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def busy_in(jobs: list, lo: float, hi: float) -> float:
    """Job-seconds inside [lo, hi]."""
    return sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in jobs)


def one_run(ctx, tag: str, makeflags: str, k: int | None, contended: bool, ms: list) -> dict:
    d = ctx.work / "ninja" / tag
    if d.exists():
        subprocess.run(["rm", "-rf", str(d)], check=True)
    nlog, mlog, stats = d / "ninja.log", d / "make.log", d / "stats.json"
    write_ninja(d / "n", nlog, ms)
    env = {k_: v for k_, v in os.environ.items() if k_ not in ("MAKEFLAGS", "CARGO_MAKEFLAGS", "MFLAGS")}
    env["MAKEFLAGS"] = makeflags
    ninja_cmd = [str(NINJA), "-C", str(d / "n")]
    if k is not None:
        ninja_cmd = ["node", str(JOBCLIENT), "fifo", "-k", str(k), "--stats", str(stats), "--", *ninja_cmd]
    procs = []
    t0 = time.monotonic()
    if contended:
        write_make(d / "m", mlog, ms)
        procs.append(subprocess.Popen([str(common.MAKE44), "-C", str(d / "m")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    procs.insert(0, subprocess.Popen(ninja_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"{tag}: {p.args[0]} failed ({p.returncode}): {err.strip()}")
    wall = time.monotonic() - t0
    nj = parse(nlog)
    out = {"ninja_wall_s": max(e for _, e in nj) - min(s for s, _ in nj), "wall_s": wall, "ninja_peak": peak(nj)}
    out["ninja_parallelism"] = sum(e - s for s, e in nj) / out["ninja_wall_s"]
    if contended:
        mj = parse(mlog)
        # While both run: from the later first start to the earlier last end.
        lo = max(min(s for s, _ in nj), min(s for s, _ in mj))
        hi = min(max(e for _, e in nj), max(e for _, e in mj))
        span = max(hi - lo, 1e-9)
        out["both_span_s"] = span
        out["ninja_parallelism_shared"] = busy_in(nj, lo, hi) / span
        out["make_parallelism_shared"] = busy_in(mj, lo, hi) / span
        out["peak_total"] = peak(nj + mj)
    if k is not None:
        st = json.loads(stats.read_text())
        out["idle_in_pipe_mean"] = st["idleTokenMs"] / max(st["wallMs"], 1)
        out["held_mean"] = (st["idleTokenMs"] + st["busyTokenMs"]) / max(st["wallMs"], 1)
        out["bridge"] = st
    return out


def median_of(runs: list) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def run(ctx) -> None:
    reps = 1 if ctx.quick else 3
    ms = durations(24 if ctx.quick else 48)
    version = subprocess.run([str(NINJA), "--version"], capture_output=True, text=True).stdout.strip()
    results = {"env": common.environment(), "ninja": version, "pool": POOL, "jobs": len(ms), "job_ms": [min(ms), max(ms)], "reps": reps, "cases": []}
    cases = [("fifo", None, c) for c in (False, True)] + [("steved", k, c) for k in K_VALUES for c in (False, True)]
    for server, k, contended in cases:
        runs = []
        for rep in range(reps):
            tag = f"{server}-{'k' + str(k) if k is not None else 'plain'}-{'contended' if contended else 'alone'}-{rep}"
            srv = common.Fifo(ctx, POOL, name="ninja-fifo") if server == "fifo" else common.Steved(ctx, POOL, name="ninja-steved")
            with srv:
                mf = f"--jobserver-auth=fifo:{srv.path}"
                runs.append(one_run(ctx, tag, mf, k, contended, ms))
        row = {"server": server, "tokens_ahead": k, "contended": contended, "median": median_of(runs), "runs": runs}
        results["cases"].append(row)
        m = row["median"]
        ctx.say(
            f"ninja {server:6} K={'-' if k is None else k} {'contended' if contended else 'alone    '}: "
            f"parallelism {m.get('ninja_parallelism_shared', m['ninja_parallelism']):.2f} (peak {m['ninja_peak']:.0f})"
            + (f", make {m['make_parallelism_shared']:.2f}" if contended else "")
            + (f", idle in pipe {m['idle_in_pipe_mean']:.2f}" if k is not None else "")
        )
    common.write_json(ctx, "ninja", results)
    (ctx.out / "ninja.md").write_text(table(results))


def table(r: dict) -> str:
    lines = [
        f"# ninja {r['ninja']} on a pool of {r['pool']} tokens: {r['jobs']} jobs of {r['job_ms'][0]}-{r['job_ms'][1]} ms, median of {r['reps']}",
        "",
        "Parallelism = job-seconds / wall time (alone: ninja's whole build; contended: while ninja and a make 4.4 of the same jobs both run).",
        "The limit is the pool plus one implicit slot per client: 5 alone, 6 for both together.",
        "",
        "| pool | K | ninja alone | peak | idle in pipe | ninja contended | make contended | idle in pipe (contended) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(c["server"], c["tokens_ahead"], c["contended"]): c["median"] for c in r["cases"]}
    keys = [("fifo", None)] + [("steved", k) for k in K_VALUES]
    for server, k in keys:
        a, c = by[(server, k, False)], by[(server, k, True)]
        idle = (lambda m: f"{m['idle_in_pipe_mean']:.2f}" if "idle_in_pipe_mean" in m else "-")
        name = "plain FIFO" if server == "fifo" else "steved + jobclient fifo"
        lines.append(
            f"| {name} | {'-' if k is None else k} | {a['ninja_parallelism']:.2f} | {a['ninja_peak']:.0f} | {idle(a)} | "
            f"{c['ninja_parallelism_shared']:.2f} | {c['make_parallelism_shared']:.2f} | {idle(c)} |"
        )
    return "\n".join(lines) + "\n"
