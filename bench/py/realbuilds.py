"""Several real builds at once, under five ways of sharing the CPUs, with and without a memory limit.

The project: LevelDB 1.20 (C++, its own Makefile, 40 compiles for out-static/libleveldb.a), from
the sources the npm package leveldown@6.1.1 carries (fetched once with `npm pack` into
bench/build/realbuilds-src). B copies are built at the same time with GNU make 4.4.1, N = online
CPUs, each scenario in a fresh memory cgroup v1 (whose own peak, memory.max_usage_in_bytes, is
the peak of the whole set: compilers, make, page cache) and, where a cgroup2 hierarchy is
mounted, a cgroup v2 directory too (its memory.pressure gives the time the set stalled on memory):

  a  each build `make -jN`                        (what a user without a jobserver gets)
  b  each build `make -jN -lN`
  c  one plain FIFO jobserver of N tokens          (make's own pool, shared by all builds)
  d  steved -j N
  e  steved -j N --max-memory-pressure P --pressure-cgroup <the builds' cgroup v2 directory>

Round 1 has no memory limit; round 2 runs every scenario again in a cgroup limited to halfway
between (a)'s peak in round 1 and the highest peak of the pooled scenarios (c, d, e): below what
(a) needs, above what a shared pool needed (N tokens plus one implicit slot per build). Per scenario:
makespan, CPU utilization (children's CPU time / (makespan x N)), peak memory, builds failed and
OOM kills, time stalled on memory, the median of the repetitions (3, or 1 with --quick), and a
time line of compilers running and memory used. Writes realbuilds.json, realbuilds.md and
realbuilds.png.
"""

import os
import resource
import shutil
import signal
import statistics
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import common

SOURCE_PKG = "leveldown@6.1.1"
SOURCE_DIR = "package/deps/leveldb/leveldb-1.20"
TARGET = "out-static/libleveldb.a"
BUILDS = 4
MEMCG_V1 = Path("/sys/fs/cgroup/memory")
CGROUP2 = Path("/sys/fs/cgroup/unified")
PRESSURE_LIMIT = 10  # % of some avg10 for scenario e
COMPILERS = ("cc1plus", "cc1", "as")
SCENARIOS = ("a", "b", "c", "d", "e")
LABELS = {
    "a": "each make -jN",
    "b": "each make -jN -lN",
    "c": "one plain FIFO, N tokens",
    "d": "steved -j N",
    "e": f"steved -j N, memory pressure <= {PRESSURE_LIMIT} %",
}


def source(ctx) -> Path:
    cache = common.BUILD / "realbuilds-src"
    tree = cache / "leveldb-1.20"
    if (tree / "Makefile").exists():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    ctx.say(f"fetching {SOURCE_PKG} (npm pack) for LevelDB's sources")
    name = subprocess.run(["npm", "pack", SOURCE_PKG, "--silent"], cwd=cache, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    with tarfile.open(cache / name) as tf:
        members = [m for m in tf.getmembers() if m.name.startswith(SOURCE_DIR + "/")]
        for m in members:
            m.name = m.name[len(SOURCE_DIR) + 1:]
        tf.extractall(tree, members=members)
    (tree / "build_detect_platform").chmod(0o755)
    return tree


class Cgroup:
    """A memory cgroup v1 (and a cgroup v2 directory when cgroup2 is mounted) for one run."""

    def __init__(self, name: str, limit_bytes: int | None):
        self.v1 = MEMCG_V1 / name
        self.v2 = CGROUP2 / name if (CGROUP2 / "cgroup.procs").exists() else None
        self.v1.mkdir()
        if self.v2:
            self.v2.mkdir()
        if limit_bytes:
            (self.v1 / "memory.limit_in_bytes").write_text(str(limit_bytes))

    def join_prefix(self) -> str:
        return f"echo $$ > {self.v1}/cgroup.procs" + (f" && echo $$ > {self.v2}/cgroup.procs" if self.v2 else "")

    def pids(self) -> list:
        return [int(p) for p in (self.v1 / "cgroup.procs").read_text().split()]

    def usage(self) -> int:
        return int((self.v1 / "memory.usage_in_bytes").read_text())

    def peak(self) -> int:
        return int((self.v1 / "memory.max_usage_in_bytes").read_text())

    def oom_kills(self) -> int:
        for line in (self.v1 / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def memory_stall_s(self) -> float | None:
        if not self.v2:
            return None
        for line in (self.v2 / "memory.pressure").read_text().splitlines():
            if line.startswith("some "):
                return int(line.split("total=")[1]) / 1e6
        return None

    def compilers(self) -> int:
        n = 0
        for p in self.pids():
            try:
                if Path(f"/proc/{p}/comm").read_text().strip() in COMPILERS:
                    n += 1
            except OSError:
                pass
        return n

    def remove(self) -> None:
        for _ in range(200):
            pids = self.pids()
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for d in (self.v1, self.v2):
            if d is None:
                continue
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


def one_run(ctx, tree: Path, scenario: str, n: int, limit_bytes: int | None, tag: str) -> dict:
    d = ctx.work / "realbuilds" / tag
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    dirs = []
    for i in range(BUILDS):
        dirs.append(d / f"b{i}")
        shutil.copytree(tree, dirs[-1], symlinks=True)
    cg = Cgroup(f"steved-bench-{os.getpid()}-{tag}", limit_bytes)
    server = None
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS", "MAKELEVEL")}
        args = []
        if scenario == "a":
            args = [f"-j{n}"]
        elif scenario == "b":
            args = [f"-j{n}", f"-l{n}"]
        elif scenario == "c":
            server = common.Fifo(ctx, n, name=f"fifo-{tag}")
            server.start()
            env["MAKEFLAGS"] = f" -j{n} --jobserver-auth=fifo:{server.path}"
        else:
            extra = ["--max-memory-pressure", str(PRESSURE_LIMIT), "-r", "0.25"] if scenario == "e" else []
            if scenario == "e" and cg.v2:
                extra += ["--pressure-cgroup", str(cg.v2)]
            server = common.Steved(ctx, n, name=f"steved-{tag}", args=["--mode", "0666", *extra])
            server.start()
            env["MAKEFLAGS"] = server.makeflags
        timeline = []
        stop = threading.Event()
        t0 = time.monotonic()

        def sample():
            while not stop.is_set():
                try:
                    timeline.append((round(time.monotonic() - t0, 2), cg.compilers(), cg.usage()))
                except OSError:
                    pass
                stop.wait(0.25)

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        stall0 = cg.memory_stall_s()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        procs = [
            subprocess.Popen(["sh", "-c", f'{cg.join_prefix()} && exec "$@"', "sh", str(common.MAKE44), "-C", str(b), *args, TARGET], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for b in dirs
        ]
        codes = []
        for p in procs:
            _, err = p.communicate(timeout=3600)
            codes.append(p.returncode)
        makespan = time.monotonic() - t0
        stop.set()
        sampler.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        stall1 = cg.memory_stall_s()
        out = {
            "makespan_s": makespan,
            "cpu_utilization": cpu / (makespan * n),
            "peak_mib": cg.peak() / 2**20,
            "failed": sum(1 for c in codes if c != 0),
            "oom_kills": cg.oom_kills(),
            "memory_stall_s": None if stall0 is None else stall1 - stall0,
            "peak_compilers": max((c for _, c, _ in timeline), default=0),
            "timeline": timeline,
        }
        ctx.say(f"  {tag}: {makespan:.1f} s, peak {out['peak_mib']:.0f} MiB, {out['peak_compilers']} compilers at most, {out['failed']} failed, {out['oom_kills']} OOM kills")
        return out
    finally:
        if server is not None:
            server.stop()
        cg.remove()
        shutil.rmtree(d, ignore_errors=True)


def median_of(runs: list) -> dict:
    keys = ("makespan_s", "cpu_utilization", "peak_mib", "failed", "oom_kills", "peak_compilers")
    m = {k: statistics.median(r[k] for r in runs) for k in keys}
    stalls = [r["memory_stall_s"] for r in runs if r["memory_stall_s"] is not None]
    m["memory_stall_s"] = statistics.median(stalls) if stalls else None
    return m


def run(ctx) -> None:
    if not (MEMCG_V1 / "memory.limit_in_bytes").exists():
        raise RuntimeError(f"realbuilds needs the cgroup v1 memory controller at {MEMCG_V1}")
    tree = source(ctx)
    n = os.cpu_count() or 1
    reps = 1 if ctx.quick else 3
    results = {"env": common.environment(), "project": "LevelDB 1.20 (from npm leveldown@6.1.1), make " + TARGET, "builds": BUILDS, "n": n, "reps": reps, "pressure_limit": PRESSURE_LIMIT, "rounds": []}
    limit = None
    for rnd in ("unlimited", "limited"):
        if rnd == "limited":
            peaks = {s: statistics.median(r["peak_mib"] for r in sc["runs"]) for s, sc in results["rounds"][0]["scenarios"].items()}
            pooled = max(peaks[s] for s in ("c", "d", "e"))
            limit = int((peaks["a"] + pooled) / 2) * 2**20
            ctx.say(f"round 2: memory limit {limit / 2**20:.0f} MiB, halfway between (a)'s peak {peaks['a']:.0f} MiB and the pooled scenarios' highest, {pooled:.0f} MiB")
        rd = {"round": rnd, "limit_mib": None if limit is None else limit / 2**20, "scenarios": {}}
        results["rounds"].append(rd)
        for s in SCENARIOS:
            rd["scenarios"][s] = {"label": LABELS[s], "runs": []}
        # Interleaved, so slow drift of the shared machine's load hits every scenario alike.
        for i in range(reps):
            for s in SCENARIOS:
                rd["scenarios"][s]["runs"].append(one_run(ctx, tree, s, n, limit, f"{rnd}-{s}-{i}"))
        for s in SCENARIOS:
            rd["scenarios"][s]["median"] = median_of(rd["scenarios"][s]["runs"])
    common.write_json(ctx, "realbuilds", results)
    (ctx.out / "realbuilds.md").write_text(markdown(results))
    plot(ctx, results)


def markdown(r: dict) -> str:
    lines = [
        f"# {r['builds']} concurrent builds of {r['project']}, N = {r['n']}, median of {r['reps']}",
        "",
        f"Load average at start: {' '.join(r['env']['loadavg_at_start'])} (a shared machine).",
        "Peak memory is the cgroup's own peak (compilers, make, page cache); memory stall is the cgroup v2 `some` total.",
        "",
        "| round | scenario | makespan | CPU util. | peak compilers | peak memory | failed | OOM kills | memory stall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rd in r["rounds"]:
        where = "no limit" if rd["limit_mib"] is None else f"{rd['limit_mib']:.0f} MiB cgroup"
        for s, sc in rd["scenarios"].items():
            m = sc["median"]
            stall = "-" if m["memory_stall_s"] is None else f"{m['memory_stall_s']:.1f} s"
            lines.append(
                f"| {where} | ({s}) {sc['label']} | {m['makespan_s']:.1f} s | {m['cpu_utilization'] * 100:.0f} % | {m['peak_compilers']:.0f} | "
                f"{m['peak_mib']:.0f} MiB | {m['failed']:.0f}/{r['builds']} | {m['oom_kills']:.0f} | {stall} |"
            )
    return "\n".join(lines) + "\n"


def plot(ctx, r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(r["rounds"]), figsize=(13, 7), squeeze=False, sharex="col")
    for col, rd in enumerate(r["rounds"]):
        for s, sc in rd["scenarios"].items():
            tl = sc["runs"][0]["timeline"]
            if not tl:
                continue
            t = [x[0] for x in tl]
            axes[0][col].step(t, [x[1] for x in tl], where="post", label=f"({s}) {sc['label']}")
            axes[1][col].plot(t, [x[2] / 2**20 for x in tl], label=f"({s})")
        title = "no memory limit" if rd["limit_mib"] is None else f"cgroup limited to {rd['limit_mib']:.0f} MiB"
        axes[0][col].set_title(f"{r['builds']} builds at once, {title} (first repetition)")
        axes[0][col].set_ylabel("compilers running")
        axes[1][col].set_ylabel("cgroup memory (MiB)")
        axes[1][col].set_xlabel("seconds")
        if rd["limit_mib"] is not None:
            axes[1][col].axhline(rd["limit_mib"], color="k", linestyle=":", linewidth=1)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    p = ctx.out / "realbuilds.png"
    fig.savefig(p, dpi=90)
    ctx.say(f"wrote {p}")
