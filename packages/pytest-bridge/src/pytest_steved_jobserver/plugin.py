"""pytest plugin ``jobserver`` (``-p jobserver``): pytest-xdist tests draw GNU make jobserver tokens.

Semantics (those of pytest-jobserver 1.1, which Gentoo's epytest relies on):

* each pytest-xdist worker holds one token for the whole protocol of each test (setup, call,
  teardown) and one during its collection;
* the first worker (``gw0``) runs in the implicit slot and takes none, and so does a run
  without xdist workers; if that worker crashes, its replacement inherits the implicit slot;
* the jobserver is ``--jobserver PATH``, else ``$PYTEST_JOBSERVER``, else the first of
  ``CARGO_MAKEFLAGS``, ``MAKEFLAGS``, ``MFLAGS`` that is set;
* fixture ``jobserver_token``: the id of the token the current test holds, or None;
* the report header names the jobserver, or says there is none (then the plugin does nothing).

Like GNU make, it never fails a run because of the jobserver unless asked to
(``--jobserver-strict``): a jobserver that cannot be used, or no ``jobclient`` command, gives one
warning line and the run goes on with one xdist worker (one test at a time, in the implicit
slot), as make goes on with ``-j1``; a jobserver lost in the middle of a run leaves the
remaining tests to one shared implicit slot. The terminal summary says how long tests waited.

The jobserver is never opened here: every token is read and written back by a ``jobclient
agent`` subprocess (steved's client library behind a line protocol; see agent.py), one per
worker, started when the worker first needs a token. When a worker dies, however it dies, the
agent sees EOF and gives its tokens back.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from typing import Mapping, Optional

import pytest

from .agent import Agent, AgentError, find_agent

#: Variables read, in this order, when neither --jobserver nor $PYTEST_JOBSERVER is given
#: (the agent itself parses the first one that is set).
MAKEFLAGS_VARIABLES = ("CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS")
ENV_PATH = "PYTEST_JOBSERVER"
ENV_TIMEOUT = "PYTEST_JOBSERVER_TIMEOUT"
ENV_STRICT = "PYTEST_JOBSERVER_STRICT"
DEFAULT_TIMEOUT = 60.0

_STATE = pytest.StashKey["_State"]()
_NO_TOKEN = pytest.StashKey[str]()

# Keys of xdist's workerinput that the controller fills in for its workers.
_WI_PATH = "jobserver_path"
_WI_SOURCE = "jobserver_source"
_WI_IMPLICIT = "jobserver_implicit"
_WI_STRICT = "jobserver_strict"
_WI_SHARED = "jobserver_shared_dir"

# Attributes a worker sets on its setup reports (xdist carries them to the controller).
_REP_SLOT = "jobserver_slot"  # "token", "implicit" or "shared"
_REP_WAIT = "jobserver_wait"  # seconds spent waiting for that slot
_REP_LOST = "jobserver_lost"  # why the jobserver was lost (first test after the loss)
_WAIT = pytest.StashKey[tuple[str, float]]()


class JobserverUnavailable(Exception):
    """A worker lost its jobserver (or its agent) in the middle of a run."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jobserver", "GNU make jobserver (steved's pytest plugin)")
    group.addoption(
        "--jobserver",
        dest="jobserver",
        metavar="PATH",
        default=None,
        help="jobserver to take a token from for each test in pytest-xdist workers: a named FIFO, "
        "a character device (/dev/steve) or steved's FUSE file. Default: $PYTEST_JOBSERVER, then "
        "the --jobserver-auth=fifo:PATH of the first of CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS that is set.",
    )
    group.addoption(
        "--jobserver-timeout",
        dest="jobserver_timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help=f"give up on the jobserver when opening it takes longer (a stopped or stuck server); "
        f"0 waits forever. Default: ${ENV_TIMEOUT} or {DEFAULT_TIMEOUT:g}. Waiting for a token is "
        "never limited.",
    )
    group.addoption(
        "--jobserver-strict",
        dest="jobserver_strict",
        action="store_true",
        default=None,
        help=f"make an unusable jobserver (or no jobclient command) a usage error (exit 4) and a "
        f"jobserver lost mid-run stop the run, instead of a warning and one test at a time. "
        f"Also ${ENV_STRICT}=1.",
    )


# -- where the jobserver is -------------------------------------------------------------


def _normalize_path(path: str) -> str:
    if path.startswith("fifo:"):
        path = path[len("fifo:") :]
    return os.path.abspath(path)


def _configured(config: pytest.Config, env: Mapping[str, str]) -> tuple[Optional[str], Optional[str]]:
    """(source, path) as configured; path None means "the agent parses `source`"; (None, None): nothing."""
    opt = config.getoption("jobserver", None)
    if opt:
        return "--jobserver", _normalize_path(opt)
    if env.get(ENV_PATH):
        return ENV_PATH, _normalize_path(env[ENV_PATH])
    for var in MAKEFLAGS_VARIABLES:
        if var in env:
            return var, None
    return None, None


def _timeout(config: pytest.Config, env: Mapping[str, str]) -> float:
    value = config.getoption("jobserver_timeout", None)
    if value is None and env.get(ENV_TIMEOUT):
        try:
            value = float(env[ENV_TIMEOUT])
        except ValueError:
            raise pytest.UsageError(f"{ENV_TIMEOUT}={env[ENV_TIMEOUT]!r} is not a number of seconds") from None
    if value is None:
        value = DEFAULT_TIMEOUT
    if value < 0:
        raise pytest.UsageError(f"--jobserver-timeout must be >= 0, got {value:g}")
    return value


def _strict(config: pytest.Config, env: Mapping[str, str]) -> bool:
    if config.getoption("jobserver_strict", None):
        return True
    return env.get(ENV_STRICT, "").strip().lower() not in ("", "0", "no", "false", "off")


def _agent_env(env: Mapping[str, str]) -> dict[str, str]:
    out = dict(env)
    # Only the sources above count: no fallback to steved's default paths.
    out["JOBCLIENT_DEFAULT_PATHS"] = ""
    return out


def _is_distributed(config: pytest.Config) -> bool:
    """Whether this process is an xdist controller that will start workers."""
    if not config.pluginmanager.hasplugin("xdist"):
        return False
    if config.getoption("collectonly", False):
        return False
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


_AUTH = re.compile(r"--jobserver-auth=(\S+)")


class _Probe:
    """What the controller found out about the configured jobserver."""

    def __init__(
        self, kind: str, source: Optional[str], detail: str, path: Optional[str] = None, code: str = ""
    ) -> None:
        # kind: "none", "fifo", "pipe" or "broken"; code: the agent's error code for "broken"
        self.kind = kind
        self.source = source
        self.detail = detail
        self.path = path
        self.code = code

    def unusable(self) -> tuple[str, str]:
        """(why, what to do) for a "pipe" or "broken" jobserver, in words for the warning."""
        src = self.source
        if self.kind == "pipe":
            return (
                f"{src} names a pipe jobserver ({self.detail}), and xdist workers start with inherited "
                "file descriptors closed",
                "use a named one: GNU make >= 4.4 with its default --jobserver-style=fifo, or steved",
            )
        path = self.path
        if self.code == "ERR_AGENT_NOT_FOUND":
            return self.detail, "install it: " + JOBCLIENT_INSTALL
        problem = problem_of(self.code)
        # A stopped steved's 0-byte file gets its own, more precise words below.
        if problem is not None and path and not (problem == "not-a-jobserver" and _empty_regular_file(path)):
            what, todo = problem_words(problem, path, _access_group(path) if problem == "permission" else None)
            return f"{what} (from {src})", todo
        if self.code == "ETIMEDOUT":
            return (
                f"opening {path or 'the jobserver'} (from {src}) hangs: its server is stopped or stuck",
                "resume or restart it, or wait longer with --jobserver-timeout",
            )
        if self.code == "ERR_JOBSERVER_NOT_FIFO" and path and _empty_regular_file(path):
            return (
                f"{path} (from {src}) is an empty regular file: the FUSE server that serves it (steved) "
                "is not running",
                "start steved",
            )
        return f"{src}: {self.detail}", f"fix {src}"


# The words for the four ways a jobserver path can fail, the same as jobclient's (its
# src/errors.ts, problemWords), so a user meets one sentence whichever tool tripped over the
# condition; test/problem-words.test.ts holds both to one table.
_PROBLEMS = {
    "ENOTCONN": "dead-mount",
    "ECONNABORTED": "dead-mount",
    "ENOENT": "missing",
    "ERR_JOBSERVER_NOT_FIFO": "not-a-jobserver",
    "EACCES": "permission",
    "EPERM": "permission",
}


def problem_of(code: str) -> Optional[str]:
    """Which problem an error code means ("dead-mount", "missing", "not-a-jobserver",
    "permission"), or None."""
    return _PROBLEMS.get(code)


def problem_words(problem: str, path: str, group: Optional[str] = None) -> tuple[str, str]:
    """(what is wrong, what to do) for `path`. `group`: for "permission", the group the file is
    served to, or None when only root may use it."""
    if problem == "dead-mount":
        return f"{path} is a dead steved mount (steved stopped or crashed)", "start steved again; it clears the dead mount"
    if problem == "missing":
        return f"{path} does not exist", "start steved, or use the path it serves"
    if problem == "not-a-jobserver":
        return (
            f"{path} is not a jobserver (not a FIFO, a character device or a file steved serves)",
            "start steved, or use the path it serves",
        )
    if problem == "permission":
        if group is not None:
            return (
                f"permission denied on {path}",
                f"join group {group}, which steved serves it to (as root: usermod -aG {group} USER), then log in again",
            )
        return (
            f"permission denied on {path}",
            "steved serves it to root only: as root, create group jobserver (groupadd jobserver), add yourself "
            "(usermod -aG jobserver USER) and restart steved, or start it with --mode 0666",
        )
    raise ValueError(f"unknown jobserver problem {problem!r}")


def _access_group(path: str) -> Optional[str]:
    """The group a jobserver file is served to (its group, when the mode gives that group read and
    write and it is not root's), by name; None when only root may use it or it cannot be seen."""
    import grp

    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_mode & 0o060 != 0o060 or st.st_gid == 0:
        return None
    try:
        return grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        return str(st.st_gid)


#: How to get the `jobclient` command the plugin runs (the warning says it; so does the README).
JOBCLIENT_INSTALL = (
    "npm install -g ./jobclient-VERSION.tgz (the tarball `npm pack -w packages/jobclient` makes in a "
    "steved checkout), or on Gentoo emerge dev-build/steved; or point PYTEST_JOBSERVER_AGENT at a jobclient"
)


def _empty_regular_file(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _probe(config: pytest.Config, env: Mapping[str, str], timeout: float) -> _Probe:
    source, path = _configured(config, env)
    if source is None:
        return _Probe("none", None, "no --jobserver, PYTEST_JOBSERVER, CARGO_MAKEFLAGS, MAKEFLAGS or MFLAGS")
    try:
        agent = Agent(
            find_agent(env),
            jobserver=path,
            env=_agent_env(env),
            timeout=timeout,
            # A make recipe's pipe jobserver (R,W) reaches the agent only through inherited fds.
            inherit_fds=path is None,
        )
    except AgentError as e:
        if e.code == "ERR_JOBSERVER_NO_ENV":
            return _Probe("none", source, e.message.replace("no jobserver: ", ""))
        if e.code == "ERR_JOBSERVER_BAD_FD":
            return _Probe("pipe", source, e.message)
        return _Probe("broken", source, f"{e.message} [{e.code}]", path or _auth_path(env.get(source, "")), e.code)
    try:
        flags = agent.makeflags()
    except AgentError as e:
        return _Probe("broken", source, f"{e.message} [{e.code}]", path, e.code)
    finally:
        agent.close()
    m = _AUTH.search(flags)
    auth = m.group(1) if m else flags
    # For a pipe (R,W) jobserver the agent names, for its children, its own read end:
    # fifo:/proc/<agent pid>/fd/R, a path that dies with the agent.
    own_fd = re.fullmatch(rf"fifo:/proc/{agent.pid}/fd/(\d+)", auth)
    if own_fd:
        return _Probe("pipe", source, f"pipe on inherited file descriptor {own_fd.group(1)}")
    if auth.startswith("fifo:"):
        return _Probe("fifo", source, auth, auth[len("fifo:") :])
    return _Probe("pipe", source, f"file descriptors {auth}")


def _auth_path(flags: str) -> Optional[str]:
    """The path of the last --jobserver-auth=fifo:PATH in a MAKEFLAGS value (for messages only)."""
    found = _AUTH.findall(flags)
    if found and found[-1].startswith("fifo:"):
        return found[-1][len("fifo:") :]
    return None


# -- state --------------------------------------------------------------------------------


class _State:
    """Per process: the token the current test holds (None: none, or the implicit slot)."""

    def __init__(self) -> None:
        self.current: Optional[int] = None
        #: What the current test runs in: "token", "implicit", "shared" (None: no xdist worker
        #: of a jobserver run, or between tests).
        self.slot: Optional[str] = None


class _SharedSlot:
    """The implicit slot, shared by every worker once the jobserver is lost in the middle of a run.

    The controller makes a directory for it; the first worker that loses the jobserver writes
    ``lost`` there, and from then on every worker (the implicit one included, which sees the
    file) runs each test under an exclusive ``lockf`` of ``slot``: one test at a time, as make
    goes on with ``-j1``. A POSIX lock dies with its process, so a killed worker frees it.
    """

    def __init__(self, directory: str) -> None:
        self.flag = os.path.join(directory, "lost")
        self.lock = os.path.join(directory, "slot")
        self.fd: Optional[int] = None
        self._seen = False

    def in_use(self) -> bool:
        if not self._seen:
            self._seen = os.path.exists(self.flag)
        return self._seen

    def declare(self) -> None:
        self._seen = True
        try:
            os.close(os.open(self.flag, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass

    def take(self) -> float:
        """Wait for the slot; returns the seconds waited."""
        t0 = time.monotonic()
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return time.monotonic() - t0

    def give(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # drops the lock


class _Controller(_State):
    """The process the user started: the header, what each xdist worker is told, and the summary."""

    def __init__(
        self, config: pytest.Config, probe: _Probe, distributed: bool, strict: bool, fallback: Optional[str]
    ) -> None:
        super().__init__()
        self.config = config
        self.probe = probe
        self.distributed = distributed
        self.strict = strict
        #: The warning given when the jobserver could not be used and the run went to -n 1.
        self.fallback = fallback
        self.implicit_owner: Optional[str] = None
        self.shared_dir: Optional[str] = None
        if distributed and probe.kind == "fifo" and not strict:
            self.shared_dir = tempfile.mkdtemp(prefix="pytest-jobserver-")
        # What the workers reported (setup reports, and workeroutput at the end).
        self.slots = {"token": 0, "implicit": 0, "shared": 0}
        self.waited = {"token": 0.0, "shared": 0.0}
        self.longest: tuple[float, str] = (0.0, "")
        self.collect_wait = 0.0
        self.lost: Optional[str] = None

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        p = self.probe
        if p.kind == "none":
            return [f"jobserver: none ({p.detail}); taking no tokens"]
        where = f"{p.detail} (from {p.source})"
        if self.fallback is not None:
            why, _ = p.unusable()
            return [f"jobserver: unavailable: {why}; using -n 1: one test at a time, in the implicit slot"]
        if p.kind == "fifo" and self.distributed:
            return [
                f"jobserver: {where}; each xdist worker but the first (gw0, the implicit slot) holds "
                "one token per test and while collecting"
            ]
        if p.kind == "broken":
            return [f"jobserver: {p.source} names a jobserver that cannot be used: {p.detail}; no xdist workers, so no tokens are needed"]
        return [f"jobserver: {where}; no xdist workers: this run is the implicit slot and takes no tokens"]

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:  # type: ignore[no-untyped-def]
        wid = node.workerinput["workerid"]
        implicit = self.implicit_owner is None
        if implicit:
            self.implicit_owner = wid
        node.workerinput[_WI_PATH] = self.probe.path if self.probe.kind == "fifo" else None
        node.workerinput[_WI_SOURCE] = self.probe.source
        node.workerinput[_WI_IMPLICIT] = implicit
        node.workerinput[_WI_STRICT] = self.strict
        node.workerinput[_WI_SHARED] = self.shared_dir

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:  # type: ignore[no-untyped-def]
        # A crashed gw0 is replaced by a worker with a new id: hand it the implicit slot.
        if error is not None and node.workerinput.get("workerid") == self.implicit_owner:
            self.implicit_owner = None
        out = getattr(node, "workeroutput", None) or {}
        self.collect_wait += float(out.get(_REP_WAIT, 0.0) or 0.0)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "setup":
            return
        lost = getattr(report, _REP_LOST, None)
        if lost and self.lost is None:
            self.lost = lost
            _warn(
                self.config,
                f"WARNING: jobserver lost in the middle of the run: {lost}; the remaining tests run "
                "one at a time, in the implicit slot. --jobserver-strict stops the run instead.",
            )
        slot = getattr(report, _REP_SLOT, None)
        if slot in self.slots:
            self.slots[slot] += 1
            wait = float(getattr(report, _REP_WAIT, 0.0) or 0.0)
            if slot in self.waited:
                self.waited[slot] += wait
            if slot == "token" and wait > self.longest[0]:
                self.longest = (wait, report.nodeid)

    def pytest_terminal_summary(self, terminalreporter) -> None:  # type: ignore[no-untyped-def]
        line = self.summary()
        if line:
            terminalreporter.write_line(line)

    def summary(self) -> Optional[str]:
        """The end-of-run line: how long tests waited for tokens (None when none were to be had)."""
        if self.fallback is not None:
            return "jobserver: unavailable (see the warning above): ran with -n 1, took no tokens"
        if not (self.distributed and self.probe.kind == "fifo"):
            return None
        s, w = self.slots, self.waited
        line = (
            f"jobserver: {s['token']} tests waited {w['token']:.2f} s for tokens in total, "
            f"{self.longest[0]:.2f} s at most"
        )
        if self.longest[1]:
            line += f" ({self.longest[1]})"
        line += f"; {s['implicit']} ran in the implicit slot; collections waited {self.collect_wait:.2f} s"
        if self.lost is not None:
            line += f"; after the jobserver was lost, {s['shared']} ran one at a time (waited {w['shared']:.2f} s)"
        return line

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.shared_dir is not None:
            shutil.rmtree(self.shared_dir, ignore_errors=True)


def _warn(config: pytest.Config, line: str) -> None:
    """One line on the terminal, like make's "warning: jobserver unavailable: using -j1."."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.ensure_newline()
        tr.write_line(line, yellow=True, bold=True)
        return
    # At configure time there is no reporter yet, and pytest captures stderr until the end.
    capman = config.pluginmanager.get_plugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
    else:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class _Worker(_State):
    """An xdist worker: takes a token for each test and its collection, unless it is the implicit one.

    If the jobserver goes away in the middle of the run (its server stopped, its agent killed),
    the worker does not crash. Strict: the test that could get no token errors with the reason
    in its setup, and the worker asks xdist to stop the run ("Interrupted: jobserver: ...").
    Otherwise: the worker tells the controller once (it prints the warning), and it and every
    other worker run their remaining tests one at a time in the shared implicit slot.
    """

    def __init__(
        self,
        config: pytest.Config,
        env: Mapping[str, str],
        path: Optional[str],
        source: str,
        implicit: bool,
        strict: bool,
        shared: Optional[_SharedSlot],
    ) -> None:
        super().__init__()
        self.config = config
        self.env = env
        self.path = path
        self.source = source
        self.implicit = implicit
        self.strict = strict
        self.shared = shared
        self.timeout = _timeout(config, env)
        self.agent: Optional[Agent] = None
        self.lost: Optional[str] = None
        self.lost_told = False
        self.where = f"{path} (from {source})" if path else f"the jobserver from {source}"

    def _drop_agent(self) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            agent.close()

    def _lose(self, session: pytest.Session, why: str) -> None:
        self._drop_agent()
        if self.lost is None:
            self.lost = why
        if self.strict or self.shared is None:
            session.shouldstop = f"jobserver: {self.lost}"
        else:
            self.shared.declare()

    def _acquire(self, session: pytest.Session) -> tuple[str, float]:
        """Wait for this process's turn: (slot, seconds waited); slot "none" if lost under strict."""
        t0 = time.monotonic()
        if self.implicit or self.lost is not None:
            if self.shared is not None and self.shared.in_use():
                return "shared", self.shared.take()
            return ("implicit" if self.implicit else "none"), 0.0
        try:
            if self.agent is None:
                self.agent = Agent(find_agent(self.env), jobserver=self.path, env=_agent_env(self.env), timeout=self.timeout)
            token = self.agent.acquire()
        except AgentError as e:
            what = "giving a token back failed" if e.request.startswith("release") else "cannot take a token"
            self._lose(session, f"{self.where}: {what}: {e}")
            return self._acquire(session)
        except BaseException:
            # Interrupted while waiting (Ctrl-C): a reply may still come, so this agent is out
            # of step. Closing its stdin cancels the wait and gives everything back.
            self._drop_agent()
            raise
        self.current = token
        return "token", time.monotonic() - t0

    def _release(self, session: pytest.Session, slot: str) -> None:
        if slot == "shared" and self.shared is not None:
            self.shared.give()
        token, self.current = self.current, None
        if slot != "token" or token is None or self.agent is None:
            return
        try:
            # Not waiting for the reply: the next acquire (or the agent's EOF) checks it.
            self.agent.release(token, wait=False)
        except AgentError as e:
            self._lose(session, f"{self.where}: giving token {token} back failed: {e}")

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_collection(self, session: pytest.Session):  # type: ignore[no-untyped-def]
        slot, waited = self._acquire(session)
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[_REP_WAIT] = waited
        try:
            yield
        finally:
            self._release(session, slot)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Optional[pytest.Item]):  # type: ignore[no-untyped-def]
        slot, waited = self._acquire(item.session)
        item.stash[_WAIT] = (slot, waited)
        self.slot = slot
        try:
            yield
        finally:
            self.slot = None
            self._release(item.session, slot)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        slot, _ = item.stash.get(_WAIT, ("", 0.0))
        if slot == "none":
            pytest.fail(f"jobserver: {self.lost}; not running this test without a token, stopping the run", pytrace=False)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
        outcome = yield
        if call.when != "setup":
            return
        rep = outcome.get_result()
        slot, waited = item.stash.get(_WAIT, ("", 0.0))
        setattr(rep, _REP_SLOT, slot)
        setattr(rep, _REP_WAIT, waited)
        if self.lost is not None and not self.lost_told and not self.strict:
            self.lost_told = True
            setattr(rep, _REP_LOST, self.lost)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._drop_agent()
        if self.shared is not None:
            self.shared.give()


# -- wiring -------------------------------------------------------------------------------


def _one_worker(config: pytest.Config) -> None:
    """What make does with -j1 when its jobserver is unavailable: xdist with one worker."""
    # The first worker spec as given (`--tx 3*popen//python=python3.12` keeps its python).
    first = re.sub(r"^\d+\*", "", (config.option.tx or ["popen"])[0])
    config.option.numprocesses = 1
    config.option.maxprocesses = None
    config.option.tx = [first]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    env = dict(os.environ)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        timeout = _timeout(config, env)
        strict = _strict(config, env)
        distributed = _is_distributed(config)
        probe = _probe(config, env, timeout)
        fallback = None
        if distributed and probe.kind in ("pipe", "broken"):
            if strict and probe.kind == "pipe":
                raise pytest.UsageError(
                    f"jobserver: {probe.source} names a pipe jobserver ({probe.detail}), and pytest-xdist "
                    "workers cannot use one: they start with every inherited file descriptor closed. "
                    "Use a named jobserver: GNU make >= 4.4 with its default --jobserver-style=fifo, steved "
                    "(MAKEFLAGS=--jobserver-auth=fifo:/run/steved/jobserver), or --jobserver PATH / "
                    "PYTEST_JOBSERVER=PATH; or run without -n."
                )
            why, todo = probe.unusable()
            if strict:
                # The agent's detail already ends in what to do for the shared conditions.
                then = "" if todo in probe.detail else f"; {todo}"
                raise pytest.UsageError(
                    f"jobserver: cannot use the jobserver named by {probe.source}: {probe.detail}{then}"
                )
            # This process runs xdist's -n decision later (its pytest_configure is trylast).
            _one_worker(config)
            fallback = (
                f"WARNING: jobserver unavailable, using -n 1 (one test at a time): {why}; {todo}. "
                "--jobserver-strict makes this an error."
            )
            _warn(config, fallback)
        state: _State = _Controller(config, probe, distributed, strict, fallback)
    else:
        # The controller resolved the jobserver and chose the implicit worker (gw0, or the
        # replacement of a crashed gw0). Without its keys it did not load this plugin: idle.
        path = workerinput.get(_WI_PATH)
        implicit = workerinput.get(_WI_IMPLICIT, True)
        shared_dir = workerinput.get(_WI_SHARED)
        shared = _SharedSlot(shared_dir) if shared_dir else None
        if path is not None and (not implicit or shared is not None):
            strict = bool(workerinput.get(_WI_STRICT, False))
            state = _Worker(config, env, path, workerinput.get(_WI_SOURCE) or "", implicit, strict, shared)
        else:
            state = _State()
    config.stash[_STATE] = state
    config.pluginmanager.register(state, "jobserver-state")


def held_token(config: pytest.Config) -> Optional[int]:
    """The id of the token this process holds right now (None: the implicit slot or no jobserver)."""
    state = config.stash.get(_STATE, None)
    return state.current if state is not None else None


def held_slot(config: pytest.Config) -> Optional[str]:
    """What the running test occupies in this worker: "token", "implicit" (gw0), "shared" (the
    one implicit slot all workers share once the jobserver was lost mid-run); None when this
    process is no worker of a run with a jobserver (or gw0 before any loss), or between tests."""
    state = config.stash.get(_STATE, None)
    return state.slot if state is not None else None


@pytest.fixture
def jobserver_token(request: pytest.FixtureRequest) -> Optional[int]:
    """The id (1, 2, ...) of the jobserver token held for this test, given out by this worker's
    jobclient agent; None in gw0, without xdist, or without a jobserver."""
    return held_token(request.config)
