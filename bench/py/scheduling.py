"""2. Scheduling quality: the same concurrent builds under four regimes, judged by the jobs.

The workload (N = 8 job slots for the machine):
  make-A, make-B   GNU make 4.4.1 builds, independent sleep jobs of varied, known lengths
  make-cpu         a GNU make build whose jobs burn a known amount of CPU time (busy loops)
  blocking         a cargo-like client (bench/clients/blocking_client.py): implicit slot plus
                   a helper thread doing blocking 1-byte reads, one request at a time; like
                   cargo, a finished job hands its token to the next waiting job
  polling          the same policy on packages/jobclient (bench/clients/polling_client.js):
                   poll, then a non-blocking read, on Node's event loop. The two differ only
                   in how they wait. (make instead returns a token when a job ends and reads
                   again for the next one.)
  late             a GNU make build that starts LATE seconds after the others
Every job is a real process (bench/c/job.c) that logs its start and end (CLOCK_MONOTONIC).

The regimes:
  (a) no-jobserver  each build on its own: make -jN, the other clients N jobs at a time
  (b) load-limit    like (a), but every make also gets -lN (GNU make's load limit; on Linux it
                    counts running processes from /proc/loadavg). The non-make clients have no
                    such option (cargo has none) and run as in (a)
  (c) shared-fifo   one plain named pipe holding N tokens, handed to every build through
                    MAKEFLAGS=--jobserver-auth=fifo:PATH (what a system-wide FIFO gives you)
  (d) steved        steved -j N on a FUSE file, handed out the same way
In (c) and (d) each client keeps the implicit slot the protocol gives every top-level client,
so the protocol's ceiling is N + (clients running); (c) and (d) are configured identically,
so they differ only in the server. We chose independent top-level clients over sub-makes of
one parent make because that is how a system-wide pool is used (builds started separately,
at different times, by different tools); a parent make would also have to hold a slot for the
late build while it waits to start.
"""

import json
import os
import random
import signal
import subprocess
import time

import numpy as np

from common import BUILD, MAKE44, ROOT, Ctx, Fifo, Steved, environment, write_json

N = 8
# The four builds with identical job lengths: equal treatment means equal shares.
SLEEP_BUILDS = ("make-A", "make-B", "blocking", "polling")
DT = 0.001  # grid step of the concurrency functions, s
SCENARIOS = ("no-jobserver", "load-limit", "shared-fifo", "steved")
LABELS = {
    "no-jobserver": "(a) no jobserver, each build -j8",
    "load-limit": "(b) -j8 -l8 per make",
    "shared-fifo": "(c) one shared FIFO, 8 tokens",
    "steved": "(d) steved -j 8",
}


def workload(quick: bool) -> dict:
    """Every sleep build gets the same multiset of job lengths, in its own order, so that equal
    treatment shows up as equal shares (mean running jobs) of the slots."""
    rng = random.Random(9)
    reps = 2 if quick else 4
    lengths = [100, 200, 300, 500, 800, 1200] * reps

    def sleep_jobs(n=None):
        js = lengths[:]
        rng.shuffle(js)
        return [("sleep", ms) for ms in js[: n or len(js)]]

    cpu = [150, 200, 300, 400] * (reps - 1)
    rng.shuffle(cpu)
    return {
        "make-A": {"client": "make", "jobs": sleep_jobs(), "arrival_s": 0.0},
        "make-B": {"client": "make", "jobs": sleep_jobs(), "arrival_s": 0.0},
        "make-cpu": {"client": "make", "jobs": [("cpu", ms) for ms in cpu], "arrival_s": 0.0},
        "blocking": {"client": "blocking", "jobs": sleep_jobs(), "arrival_s": 0.0},
        "polling": {"client": "polling", "jobs": sleep_jobs(), "arrival_s": 0.0},
        "late": {"client": "make", "jobs": sleep_jobs(len(lengths) // 2), "arrival_s": 1.5 if quick else 3.0},
    }


def write_inputs(ctx: Ctx, builds: dict, log: str) -> None:
    d = ctx.work / "sched"
    d.mkdir(exist_ok=True)
    for name, b in builds.items():
        names = [f"j{i:02d}" for i in range(len(b["jobs"]))]
        if b["client"] == "make":
            lines = [f"all: {' '.join(names)}", f".PHONY: all {' '.join(names)}"]
            for n, (kind, ms) in zip(names, b["jobs"]):
                # No shell metacharacters: make execs the job directly.
                lines.append(f"{n}:\n\t@{BUILD / 'job'} {log} {name}:{n} {kind} {ms}")
            (d / f"{name}.mk").write_text("\n".join(lines) + "\n")
        else:
            (d / f"{name}.jobs").write_text("".join(f"{n} {kind} {ms}\n" for n, (kind, ms) in zip(names, b["jobs"])))


def command(ctx: Ctx, name: str, b: dict, scenario: str, log: str) -> list:
    d = ctx.work / "sched"
    if b["client"] == "make":
        cmd = [str(MAKE44), "-f", str(d / f"{name}.mk")]
        if scenario in ("no-jobserver", "load-limit"):
            cmd.append(f"-j{N}")
        if scenario == "load-limit":
            cmd.append(f"-l{N}")
        return cmd
    if b["client"] == "blocking":
        return [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "bench" / "clients" / "blocking_client.py"), str(BUILD / "job"), log, name, str(N), str(d / f"{name}.jobs")]
    return ["node", str(ROOT / "bench" / "clients" / "polling_client.js"), str(BUILD / "job"), log, name, str(N), str(d / f"{name}.jobs")]


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "GNUMAKEFLAGS", "MAKELEVEL", "CARGO_MAKEFLAGS", "MAKEFILES")}
    env["STEVED_ROOT"] = str(ROOT)
    return env


def run_scenario(ctx: Ctx, builds: dict, scenario: str, rep: int) -> dict:
    log = str(ctx.work / "sched" / f"{scenario}-{rep}.log")
    write_inputs(ctx, builds, log)
    env = clean_env()
    server = None
    if scenario == "shared-fifo":
        server = Fifo(ctx, N, name="sched-fifo")
    elif scenario == "steved":
        server = Steved(ctx, N, False, name="sched-steved")
    procs = {}
    result = {"scenario": scenario, "rep": rep, "loadavg_at_start": open("/proc/loadavg").read().split()[:4]}
    try:
        if server:
            server.start()
            env["MAKEFLAGS"] = f"--jobserver-auth=fifo:{server.path}"
        order = sorted(builds, key=lambda n: builds[n]["arrival_s"])
        t0 = time.monotonic_ns()
        arrivals = {}
        for name in order:
            b = builds[name]
            wait = t0 + int(b["arrival_s"] * 1e9) - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            out = open(ctx.work / "sched" / f"{scenario}-{rep}-{name}.out", "w")
            arrivals[name] = time.monotonic_ns()
            procs[name] = subprocess.Popen(command(ctx, name, b, scenario, log), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ctx.work / "sched")
        deadline = time.monotonic() + (60 if ctx.quick else 120)
        codes = {}
        for name, p in procs.items():
            try:
                codes[name] = p.wait(max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[name] = "timeout"
        result["exit_codes"] = codes
        if server and server.kind == "steved":
            result["steved_status"] = server.status()
        if any(c != 0 for c in codes.values()):
            outs = {n: (ctx.work / "sched" / f"{scenario}-{rep}-{n}.out").read_text()[-2000:] for n, c in codes.items() if c != 0}
            raise RuntimeError(f"{scenario}: builds failed {codes}: {outs}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if server:
            server.stop()
    jobs = parse_log(open(log).read(), t0)
    result["arrival_s"] = {n: round((a - t0) / 1e9, 4) for n, a in arrivals.items()}
    result["jobs"] = jobs
    result["metrics"] = metrics(builds, jobs, result["arrival_s"])
    return result


def parse_log(text: str, t0: int) -> dict:
    starts, out = {}, {}
    for line in text.splitlines():
        what, name, ns = line.split()
        if what == "start":
            starts[name] = (int(ns) - t0) / 1e9
        else:
            build, job = name.split(":")
            out.setdefault(build, []).append([job, round(starts.pop(name), 4), round((int(ns) - t0) / 1e9, 4)])
    if starts:
        raise RuntimeError(f"jobs never ended: {sorted(starts)}")
    for v in out.values():
        v.sort(key=lambda j: j[1])
    return out


def grids(builds: dict, jobs: dict, end: float):
    n = int(end / DT) + 2
    t = np.arange(n) * DT
    conc = {}
    started = {}
    for b in builds:
        c = np.zeros(n + 1)
        s = np.zeros(n + 1)
        for _, st, en in jobs.get(b, []):
            i, j = int(round(st / DT)), int(round(en / DT))
            c[i] += 1
            c[j] -= 1
            s[i] += 1
        conc[b] = np.cumsum(c)[:n]
        started[b] = np.cumsum(s)[:n]
    return t, conc, started


def jain(x: list) -> float:
    x = [v for v in x]
    return float(sum(x) ** 2 / (len(x) * sum(v * v for v in x))) if any(x) else float("nan")


def metrics(builds: dict, jobs: dict, arrival: dict) -> dict:
    end = max(j[2] for v in jobs.values() for j in v)
    t, conc, started = grids(builds, jobs, end)
    total = sum(conc.values())
    n_jobs = {b: len(builds[b]["jobs"]) for b in builds}
    # A build has work waiting from its first job's start (so a client's own start-up, e.g.
    # Node's ~0.1 s, is not counted as scheduling) until its last job has started.
    ready = {b: jobs[b][0][1] for b in builds}
    pending = {b: (t >= ready[b]) & (started[b] < n_jobs[b]) for b in builds}
    waiting = np.zeros_like(t, dtype=bool)
    for b in builds:
        waiting |= pending[b]
    work = sum(ms for b in builds.values() for _, ms in b["jobs"]) / 1000
    late = "late"
    late_work = sum(ms for _, ms in builds[late]["jobs"]) / 1000
    longest = max(ms for b in builds.values() for _, ms in b["jobs"]) / 1000
    ideal = max(work / N, arrival[late] + late_work / N, longest)
    span = t <= end
    main = [b for b in builds if b != late]

    def window_shares(names):
        both = np.ones_like(t, dtype=bool)
        for b in names:
            both &= pending[b]
        if not both.any():
            return None, {b: None for b in names}
        return float(both.sum() * DT), {b: round(float(conc[b][both].mean()), 3) for b in names}

    win, shares = window_shares(main)
    # Each build's own life: first job start to last job end, and its mean running jobs then.
    per_build = {}
    for b in builds:
        first, last = jobs[b][0][1], max(j[2] for j in jobs[b])
        life = (t >= first) & (t < last)
        per_build[b] = {
            "first_job_s": round(first, 3),
            "finished_s": round(last, 3),
            "duration_s": round(last - first, 3),
            "mean_running_jobs": round(float(conc[b][life].mean()), 3),
            "peak_running_jobs": int(conc[b].max()),
        }
    life_share = {b: per_build[b]["mean_running_jobs"] for b in builds}
    late_jobs = jobs[late]
    first_job = late_jobs[0][1] - arrival[late]
    two = np.nonzero((conc[late] >= 2) & (t >= arrival[late]))[0]
    first_token = float(t[two[0]] - arrival[late]) if len(two) else None
    busy_cpu = [j for j in jobs["make-cpu"]]
    return {
        "peak_concurrency": int(total.max()),
        "peak_over_N": round(float(total.max()) / N, 2),
        "mean_concurrency": round(float(total[span].mean()), 2),
        "utilization_of_N_while_work_waited": round(float((np.minimum(total, N) / N)[waiting].mean()), 3),
        "seconds_with_work_waiting_and_a_slot_of_N_idle": round(float(((total < N) & waiting).sum() * DT), 3),
        "makespan_s": round(end, 3),
        "ideal_makespan_s": round(ideal, 3),
        "makespan_over_ideal": round(end / ideal, 3),
        "total_work_s": round(work, 3),
        "jain_fairness": round(jain([life_share[b] for b in SLEEP_BUILDS]), 3),
        "jain_fairness_with_cpu_build": round(jain([life_share[b] for b in main]), 3),
        "blocking_over_polling": round(life_share["blocking"] / life_share["polling"], 2),
        "blocking_duration_s": per_build["blocking"]["duration_s"],
        "polling_duration_s": per_build["polling"]["duration_s"],
        "per_build": per_build,
        "contended_window_s": round(win, 3) if win else 0.0,
        "shares_in_contended_window": shares,
        "late_first_job_wait_s": round(first_job, 3),
        "late_first_token_wait_s": round(first_token, 3) if first_token is not None else None,
        "cpu_jobs_wall_over_cpu": round(float(np.mean([(e - s) / (ms / 1000) for (_, s, e), (_, ms) in zip(sorted(busy_cpu, key=lambda j: j[0]), builds["make-cpu"]["jobs"])])), 2),
    }


def run(ctx: Ctx) -> dict:
    builds = workload(ctx.quick)
    reps = 1 if ctx.quick else 4
    results = []
    for rep in range(reps):
        for sc in SCENARIOS:
            r = run_scenario(ctx, builds, sc, rep)
            m = r["metrics"]
            ctx.say(f"sched: rep {rep + 1}/{reps} {sc}: peak {m['peak_concurrency']}, util {m['utilization_of_N_while_work_waited']}, "
                    f"makespan {m['makespan_s']} s (ideal {m['ideal_makespan_s']}), jain {m['jain_fairness']}, late token {m['late_first_token_wait_s']}")
            results.append(r)
            time.sleep(1)
    summary = {}
    for sc in SCENARIOS:
        ms = [r["metrics"] for r in results if r["scenario"] == sc]
        agg = {}
        for k, v in ms[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and all(isinstance(m[k], (int, float)) for m in ms):
                agg[k] = round(float(np.median([m[k] for m in ms])), 3)
        summary[sc] = agg
    data = {
        "what": __doc__.strip(),
        "environment": environment(),
        "N": N,
        "repetitions": reps,
        "workload": {n: {"client": b["client"], "arrival_s": b["arrival_s"], "jobs": [f"{k}:{ms}ms" for k, ms in b["jobs"]]} for n, b in builds.items()},
        "definitions": {
            "utilization_of_N_while_work_waited": "mean of min(running jobs, N)/N over the instants when some build that had started its first job still had a job not yet started",
            "ideal_makespan_s": "max(total work / N, late arrival + late work / N, longest job); CPU jobs count their CPU time",
            "per_build.mean_running_jobs": "a build's mean number of running jobs over its own life (first job start to last job end): its throughput in slots",
            "jain_fairness": "(sum x)^2 / (n sum x^2) of mean_running_jobs over the four builds with identical jobs (make-A, make-B, blocking, polling); 1 is perfectly even",
            "jain_fairness_with_cpu_build": "the same over all five builds that start together; make-cpu's jobs last longer when CPUs are oversubscribed, so its slot-seconds grow with contention",
            "blocking_over_polling": "mean_running_jobs of the blocking client / that of the polling client (same jobs, same policy, only the way of waiting differs)",
            "shares_in_contended_window": "mean running jobs of each build while all five still had jobs not yet started (short or empty when a build runs out of waiting jobs early)",
            "late_first_job_wait_s": "late build's arrival to its first job (the implicit slot, or its own -j)",
            "late_first_token_wait_s": "late build's arrival to the first moment it runs 2 jobs (its first token under (c) and (d))",
            "cpu_jobs_wall_over_cpu": "mean wall time / CPU time of make-cpu's jobs (1.0: never waited for a CPU)",
        },
        "summary_median_over_reps": summary,
        "runs": results,
    }
    write_json(ctx, "scheduling", data)
    return data
