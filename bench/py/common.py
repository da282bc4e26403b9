"""Shared pieces of the benchmarks: the three token servers, process accounting, statistics.

Every server started here registers its pid in WORK/pids/, so bench/run.sh's trap can stop
it (and unmount what it mounted) even when Python itself dies.
"""

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
BUILD = BENCH / "build"
STEVED_BIN = ROOT / "packages" / "steved" / "bin" / "steved.js"
STEVECTL_BIN = ROOT / "packages" / "steved" / "bin" / "stevectl.js"
MAKE44 = ROOT / ".venv" / "bin" / "make"
PIN = ["taskset", "-c", "0"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Ctx:
    work: Path
    out: Path
    quick: bool
    log: list = field(default_factory=list)

    def say(self, msg: str) -> None:
        print(f"[bench] {msg}", flush=True)


sys.path.insert(0, str(ROOT / "test" / "helpers"))
import steved_helpers  # noqa: E402  (the project's shared Python helpers)
from steved_helpers import is_mounted  # noqa: E402,F401


def register(ctx: Ctx, pid: int) -> None:
    d = ctx.work / "pids"
    d.mkdir(exist_ok=True)
    (d / str(pid)).write_text(str(pid))


def unregister(ctx: Ctx, pid: int) -> None:
    try:
        (ctx.work / "pids" / str(pid)).unlink()
    except FileNotFoundError:
        pass


class Server:
    """A token server: `path` is what clients open; start/stop are idempotent."""

    kind = "?"
    path: str
    pid: int | None = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


class Fifo(Server):
    """A plain named pipe holding `tokens` bytes; we keep it open so the bytes stay in it."""

    kind = "fifo"

    def __init__(self, ctx: Ctx, tokens: int, name: str = "fifo"):
        self.path = str(ctx.work / name)
        self.tokens = tokens
        self.fd = None

    def start(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        os.mkfifo(self.path, 0o666)
        self.fd = os.open(self.path, os.O_RDWR)
        os.write(self.fd, b"+" * self.tokens)

    def stop(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if os.path.exists(self.path):
            os.unlink(self.path)


class Spawned(Server):
    """A server process serving a FUSE file. start() runs command() and waits for ready();
    Steved starts through steved_helpers.start instead."""

    def __init__(self, ctx: Ctx, name: str, pinned: bool):
        self.ctx = ctx
        self.path = str(ctx.work / name)
        self.pinned = pinned
        self.proc = None
        self.out = ctx.work / f"{name}.out"
        self.err = ctx.work / f"{name}.err"

    def command(self) -> list:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def spawned(self, proc: subprocess.Popen) -> None:
        """Record the server process (in WORK/pids/ too) as soon as it exists."""
        self.proc = proc
        self.pid = proc.pid
        register(self.ctx, self.pid)

    def start(self):
        Path(self.path).touch()
        cmd = (PIN if self.pinned else []) + self.command()
        self.spawned(subprocess.Popen(cmd, stdout=open(self.out, "w"), stderr=open(self.err, "w"), start_new_session=True))
        deadline = time.monotonic() + 20
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.err.read_text()
                self.stop()
                raise RuntimeError(f"{self.kind} did not start: {err.strip()}")
            time.sleep(0.02)

    def stop(self):
        if self.proc is not None:
            steved_helpers.stop(self.proc, self.path)
            unregister(self.ctx, self.proc.pid)
            self.proc = None
        if is_mounted(self.path):
            subprocess.run(["umount", "-l", self.path], check=False)

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (all threads), in seconds."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def memory_kib(self) -> dict:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads", "RssAnon", "RssFile"):
                    out[k] = int(v.split()[0])
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        out["open_fds"] = fds
        return out


class CServer(Spawned):
    """bench/c/tokensrv: the minimal single-threaded libfuse3 server (the transport's limit)."""

    kind = "c-server"

    def __init__(self, ctx: Ctx, tokens: int, pinned: bool = False, name: str = "csrv", write_first: bool = False, stream: bool = False):
        super().__init__(ctx, name, pinned)
        self.tokens = tokens
        self.write_first = write_first
        self.stream = stream

    def command(self):
        return [str(BUILD / "tokensrv"), self.path, str(self.tokens)] + (["write-first"] if self.write_first else []) + (["stream"] if self.stream else [])

    def ready(self):
        return "ready" in self.out.read_text()


def stevectl() -> list:
    """The command of the stevectl beside STEVED_BIN (which --steved may point elsewhere)."""
    return ["node", str(Path(STEVED_BIN).parent / "stevectl.js")]


class Steved(Spawned):
    """The real steved on a FUSE file."""

    kind = "steved"

    def __init__(self, ctx: Ctx, tokens: int, pinned: bool = False, name: str = "steved", args: list | None = None):
        super().__init__(ctx, name, pinned)
        self.tokens = tokens
        self.args = args or []
        self._makeflags = None

    def start(self):
        Path(self.path).touch()
        try:
            self.proc, self._makeflags = steved_helpers.start(
                (PIN if self.pinned else []) + ["node", str(STEVED_BIN)], self.path, self.tokens, self.args,
                out=self.out, err=self.err, timeout=20, spawned=self.spawned,
            )
        except BaseException:
            self.stop()  # steved_helpers.start stopped it; this forgets its pid
            raise

    @property
    def makeflags(self) -> str:
        """What steved printed after MAKEFLAGS= when it started."""
        if self._makeflags is None:
            raise RuntimeError("steved has not started")
        return self._makeflags

    def status(self) -> dict:
        """The status document, as `stevectl status --json` prints it."""
        return steved_helpers.status(self.path, stevectl())


@contextlib.contextmanager
def script_tree(script: str, *args: str):
    """Run the Python program `script` with `args` in a session of its own, its stdin and stdout
    text pipes to us; on the way out SIGKILL its whole process group (what it forked too)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def rt_8_clients(ctx: Ctx, path: str) -> dict:
    """8 clients doing acquire+release on `path` (rtbench rt, 2 s or 4 s): their round trips."""
    r = run_json([str(BUILD / "rtbench"), "rt", path, "8", "10000000", "100", "2" if ctx.quick else "4"], timeout=120)
    return {k: r[k] for k in ("ops", "median_us", "p99_us", "round_trips_per_s")}


def percentile(v: list, p: float) -> float:
    if not v:
        return float("nan")
    s = sorted(v)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary(v: list) -> dict:
    return {
        "n": len(v),
        "p50_us": round(percentile(v, 50), 2),
        "p90_us": round(percentile(v, 90), 2),
        "p99_us": round(percentile(v, 99), 2),
        "max_us": round(max(v), 2) if v else None,
        "mean_us": round(statistics.fmean(v), 2) if v else None,
    }


def run_json(cmd: list, timeout: float = 120) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 and not r.stdout.strip():
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if r.returncode != 0:
        out["stderr"] = r.stderr.strip()
    return out


def environment() -> dict:
    def sh(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return None

    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": sh("git", "rev-parse", "--short", "HEAD"),
        "kernel": platform.release(),
        "cpu": cpu,
        "online_cpus": os.cpu_count(),
        "node": sh("node", "--version"),
        "make": (sh(str(MAKE44), "--version") or "").splitlines()[0] if MAKE44.exists() else None,
        "libfuse": sh("pkg-config", "--modversion", "fuse3"),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    }


def write_json(ctx: Ctx, name: str, data: dict) -> Path:
    p = ctx.out / f"{name}.json"
    p.write_text(json.dumps(data, indent=1) + "\n")
    ctx.say(f"wrote {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}")
    return p


def scale_case_main(cases: dict, key_help: str) -> None:
    """Run scale cases of bench/py on their own (not through main.py), possibly against another
    steved (an older checkout, to measure a before/after in one session), and merge their rows
    into bench/results/scale.json under --key. cases: {name in scale.json: (what, run(ctx))}."""
    global STEVED_BIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steved", type=Path, help="another steved.js (e.g. an older checkout) to measure; its stevectl.js beside it")
    ap.add_argument("--print-only", action="store_true", help="print the rows, leave scale.json alone")
    ap.add_argument("--key", default="rows", help=key_help)
    a = ap.parse_args()
    if a.steved:
        STEVED_BIN = a.steved
    a.work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(work=a.work, out=a.work, quick=a.quick)
    results = {name: (what, run(ctx)) for name, (what, run) in cases.items()}
    print(json.dumps({k: v[1] for k, v in results.items()}, indent=2))
    if a.print_only:
        return
    f = ROOT / "bench" / "results" / "scale.json"
    d = json.loads(f.read_text())
    for name, (what, rows) in results.items():
        case = d.setdefault(name, {"what": what})
        case[a.key] = rows
        case[a.key + "_environment"] = environment()
        if a.steved:
            case[a.key + "_steved"] = str(a.steved)
    f.write_text(json.dumps(d, indent=1) + "\n")  # as write_json
