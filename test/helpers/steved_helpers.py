"""What the project's Python tests and benchmarks share about a running steved (one copy; the
TypeScript tests' counterpart is test/helpers/steved.ts): is a path mounted, the status
document as `stevectl status --json` prints it, and stopping a server so nothing stays mounted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEVECTL_BIN = ROOT / "packages" / "steved" / "bin" / "stevectl.js"


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
