"""A `jobclient agent` subprocess and its line protocol (protocol 1).

The agent is the jobserver client: it opens the jobserver, reads tokens (poll, then read, as
steved's jobclient library does for every client) and writes them back. This module only
speaks the agent's line protocol on its stdin/stdout:

    (start)         -> ready 1              or: err CODE MESSAGE, then the agent exits 1
    acquire         -> ok ID                waits until a token is free
    release ID      -> ok
    makeflags       -> ok VALUE             e.g. " --jobserver-auth=fifo:/run/steved/jobserver"
    (EOF on stdin)  -> every token goes back, the agent exits 0

Because tokens live in the agent, a pytest worker that dies in any way (even SIGKILL) closes
the agent's stdin and the agent gives everything back: nothing leaks, whatever the jobserver.
"""

from __future__ import annotations

import os
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Mapping, Optional, Sequence

#: The environment variable naming the agent command (for development and tests), e.g.
#: ``node /src/steved/packages/jobclient/bin/jobclient.js`` or just the ``.js`` path.
AGENT_ENV = "PYTEST_JOBSERVER_AGENT"

PROTOCOL_VERSION = 1


class AgentError(Exception):
    """The agent answered ``err CODE MESSAGE``, or could not be started or talked to."""

    def __init__(self, code: str, message: str, request: str = "") -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message
        #: The request that failed ("" when none did: start-up, a broken pipe).
        self.request = request


def _sibling_checkout() -> Optional[Path]:
    """jobclient.js of the steved checkout this package sits in (an editable install)."""
    # src/pytest_steved_jobserver/agent.py -> packages/pytest-bridge/src/... -> packages/
    try:
        candidate = Path(__file__).resolve().parents[3] / "jobclient" / "bin" / "jobclient.js"
    except IndexError:
        return None
    return candidate if candidate.is_file() else None


def find_agent(env: Mapping[str, str]) -> list[str]:
    """The command that starts ``jobclient`` (without the ``agent`` word).

    In order: $PYTEST_JOBSERVER_AGENT (a command line; a first word ending in ``.js`` is run
    with ``node``), ``jobclient`` on $PATH, then ``packages/jobclient/bin/jobclient.js`` of the
    steved checkout this package was installed from in editable mode.
    Raises AgentError ``ERR_AGENT_NOT_FOUND`` when none is there.
    """
    spec = env.get(AGENT_ENV, "").strip()
    if spec:
        words = shlex.split(spec)
        if words[0].endswith(".js"):
            words = [_node(env)] + words
        elif shutil.which(words[0], path=env.get("PATH")) is None:
            raise AgentError(
                "ERR_AGENT_NOT_FOUND",
                f"{AGENT_ENV}={spec!r}: {words[0]!r} is not an executable file",
            )
        return words
    exe = shutil.which("jobclient", path=env.get("PATH"))
    if exe:
        return [exe]
    js = _sibling_checkout()
    if js:
        return [_node(env), str(js)]
    raise AgentError(
        "ERR_AGENT_NOT_FOUND",
        "steved's `jobclient` command, through which the jobserver plugin takes tokens, is not on PATH",
    )


def _node(env: Mapping[str, str]) -> str:
    node = shutil.which("node", path=env.get("PATH"))
    if node is None:
        raise AgentError("ERR_AGENT_NOT_FOUND", "`node` (Node.js >= 20) is not on PATH; it runs jobclient")
    return node


class Agent:
    """One running ``jobclient agent``. Not thread-safe; one per process is the intent."""

    def __init__(
        self,
        command: Sequence[str],
        jobserver: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        inherit_fds: bool = False,
    ) -> None:
        """Start the agent and wait for ``ready``.

        ``jobserver``: a path handed to ``--jobserver``; None lets the agent read
        CARGO_MAKEFLAGS/MAKEFLAGS/MFLAGS from ``env``. ``timeout``: seconds to wait for
        ``ready`` (opening the jobserver), None or 0 for no limit. ``inherit_fds``: pass this
        process's inheritable file descriptors on (a ``R,W`` pipe jobserver from make).
        Raises AgentError with the agent's code, ``ETIMEDOUT`` or ``ERR_AGENT_EXIT``.
        """
        argv = list(command) + ["agent"]
        if jobserver is not None:
            argv += ["--jobserver", jobserver]
        self.argv = argv
        self._buf = b""
        self._unanswered: list[str] = []
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=dict(env) if env is not None else None,
                close_fds=not inherit_fds,
                # Its own session: a Ctrl-C meant for pytest must not kill the agent under a
                # test that still holds its token; the agent ends when its stdin closes.
                start_new_session=True,
                bufsize=0,
            )
        except OSError as e:
            self._stderr.close()
            raise AgentError("ERR_AGENT_NOT_FOUND", f"cannot start {shlex.join(argv)}: {e}") from e
        self.pid = self.proc.pid
        try:
            line = self._readline(timeout or None)
        except BaseException:
            self.kill()
            raise
        if line is None:
            self.kill()
            raise AgentError(
                "ETIMEDOUT",
                f"the jobserver did not answer within {timeout:g} s: opening it hangs (is its "
                "server stopped or stuck?); set --jobserver-timeout to wait longer",
            )
        if line.startswith("err "):
            self.close()
            raise _parse_err(line)
        if line != f"ready {PROTOCOL_VERSION}":
            self.kill()
            if line == "":
                raise AgentError(
                    "ERR_AGENT_EXIT",
                    f"{shlex.join(argv)} exited with status {self.proc.returncode} before it was ready"
                    + self._stderr_tail(),
                )
            raise AgentError(
                "ERR_AGENT_PROTOCOL",
                f"{shlex.join(argv)} said {line!r}, expected 'ready {PROTOCOL_VERSION}' "
                "(a jobclient of another protocol version?)",
            )

    # -- protocol ---------------------------------------------------------------------

    def request(self, line: str) -> str:
        """Send one request and return the text after ``ok`` (raises AgentError on ``err``)."""
        self._drain()
        self._send(line)
        return self._answer(line)

    def send(self, line: str) -> None:
        """Send a request without waiting for its reply; the next request checks it first.

        For ``release``: the agent acts on it as soon as it reads the line, and the caller
        does not wait for the round trip to the jobserver.
        """
        self._drain()
        self._send(line)
        self._unanswered.append(line)

    def _drain(self) -> None:
        while self._unanswered:
            line = self._unanswered.pop(0)
            self._answer(line)

    def _send(self, line: str) -> None:
        try:
            os.write(self.proc.stdin.fileno(), (line + "\n").encode())  # type: ignore[union-attr]
        except BrokenPipeError:
            self.kill()
            raise AgentError(
                "ERR_AGENT_EXIT",
                f"the jobclient agent (pid {self.pid}) is gone (status {self.proc.returncode})"
                + self._stderr_tail(),
            ) from None

    def _answer(self, line: str) -> str:
        reply = self._readline(None)
        if reply == "" or reply is None:
            self.kill()
            raise AgentError(
                "ERR_AGENT_EXIT",
                f"the jobclient agent (pid {self.pid}) exited with status {self.proc.returncode} "
                f"while answering {line!r}" + self._stderr_tail(),
                line,
            )
        if reply == "ok":
            return ""
        if reply.startswith("ok "):
            return reply[3:]
        if reply.startswith("err "):
            err = _parse_err(reply)
            err.request = line
            raise err
        self.kill()
        raise AgentError("ERR_AGENT_PROTOCOL", f"unexpected reply {reply!r} to {line!r}", line)

    def acquire(self) -> int:
        """Wait for one token; returns its id."""
        return int(self.request("acquire"))

    def release(self, token: int, wait: bool = True) -> None:
        """Give a token back; with wait=False the reply is checked by the next request."""
        if wait:
            self.request(f"release {token}")
        else:
            self.send(f"release {token}")

    def makeflags(self) -> str:
        """MAKEFLAGS naming the jobserver the agent opened (``--jobserver-auth=...``)."""
        return self.request("makeflags").strip()

    # -- life cycle ---------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 10.0) -> Optional[int]:
        """EOF on the agent's stdin: it gives every token back and exits. Waits for it."""
        try:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the agent (steved takes its tokens back when the process is gone)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass

    # -- reading ------------------------------------------------------------------------

    def _readline(self, timeout: Optional[float]) -> Optional[str]:
        """One line without its newline; "" at EOF; None when `timeout` passed first."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                with selectors.DefaultSelector() as sel:
                    sel.register(fd, selectors.EVENT_READ)
                    if not sel.select(left):
                        continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait()
                return ""
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        if not text:
            return ""
        return ": " + " | ".join(text.splitlines()[-5:])


def _parse_err(line: str) -> AgentError:
    _, _, rest = line.partition(" ")
    code, _, message = rest.partition(" ")
    return AgentError(code or "ERR_AGENT_PROTOCOL", message or line)
