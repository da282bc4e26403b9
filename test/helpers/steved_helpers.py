"""What the project's Python tests and benchmarks share about a running steved (one copy; the
TypeScript tests' counterpart is test/helpers/steved.ts): starting one on a FUSE file and
waiting until it serves, is a path mounted, the status document as `stevectl status --json`
prints it, and stopping a server so nothing stays mounted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
STEVECTL_BIN = ROOT / "packages" / "steved" / "bin" / "stevectl.js"


def start(
    steved: Sequence[str],
    path: str | os.PathLike,
    jobs: int,
    args: Sequence[str] = (),
    *,
    out: Path,
    err: Path,
    timeout: float = 30,
    spawned: Optional[Callable[[subprocess.Popen], None]] = None,
) -> tuple[subprocess.Popen, str]:
    """Start `steved + [--transport fuse --path PATH -j JOBS] + args` in a new session, its
    stdout to the file `out` and its stderr to `err`, and wait until it serves: until its
    stdout holds a whole `MAKEFLAGS=...` line. `steved` is the command that runs steved (with
    any prefix, e.g. taskset); `spawned(proc)` is called as soon as the process exists (to
    record it before the wait). Returns the process and what follows `MAKEFLAGS=`. When steved
    exits first, or has not said it by `timeout` seconds, it is stopped (nothing stays mounted)
    and a RuntimeError carries its stderr."""
    cmd = [*steved, "--transport", "fuse", "--path", str(path), "-j", str(jobs), *args]
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e, start_new_session=True)
    try:
        if spawned is not None:
            spawned(proc)
        deadline = time.monotonic() + timeout
        while True:
            text = Path(out).read_text(errors="replace")
            for line in text[: text.rfind("\n") + 1].splitlines():
                if line.startswith("MAKEFLAGS="):
                    return proc, line[len("MAKEFLAGS="):]
            rc = proc.poll()
            if rc is not None or time.monotonic() > deadline:
                why = f"exited with {rc}" if rc is not None else f"said no MAKEFLAGS line within {timeout} s"
                raise RuntimeError(f"steved on {path} did not start ({why}): {Path(err).read_text(errors='replace').strip()}")
            time.sleep(0.02)
    except BaseException:
        stop(proc, path)
        raise


def is_mounted(path: str | os.PathLike) -> bool:
    """Whether `path` is a mount point of this mount namespace (field 5 of mountinfo)."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == str(path) for line in f if line.strip())


def status(path: str | os.PathLike, stevectl: list[str] | None = None, timeout: float = 60) -> dict:
    """steved's status document, read by `stevectl --device PATH status --json`."""
    cmd = (stevectl or ["node", str(STEVECTL_BIN)]) + ["--device", str(path), "status", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"stevectl status failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout)


def stop(proc: subprocess.Popen, path: str | os.PathLike) -> None:
    """SIGTERM (after SIGCONT, in case a test stopped it), SIGKILL after 10 s; then make sure
    nothing is left mounted at `path`."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if is_mounted(path):
        subprocess.run(["umount", "-l", str(path)], check=False)
