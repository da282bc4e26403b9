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

The jobserver is never opened here: every token is read and written back by a ``jobclient
agent`` subprocess (steved's client library behind a line protocol; see agent.py), one per
worker, started when the worker first needs a token. When a worker dies, however it dies, the
agent sees EOF and gives its tokens back.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator, Mapping, Optional

import pytest

from .agent import Agent, AgentError, find_agent

#: Variables read, in this order, when neither --jobserver nor $PYTEST_JOBSERVER is given
#: (the agent itself parses the first one that is set).
MAKEFLAGS_VARIABLES = ("CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS")
ENV_PATH = "PYTEST_JOBSERVER"
ENV_TIMEOUT = "PYTEST_JOBSERVER_TIMEOUT"
DEFAULT_TIMEOUT = 60.0

_STATE = pytest.StashKey["_State"]()
_NO_TOKEN = pytest.StashKey[str]()

# Keys of xdist's workerinput that the controller fills in for its workers.
_WI_PATH = "jobserver_path"
_WI_SOURCE = "jobserver_source"
_WI_IMPLICIT = "jobserver_implicit"


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
        help=f"give up with an error when opening the jobserver takes longer (a stopped or stuck "
        f"server); 0 waits forever. Default: ${ENV_TIMEOUT} or {DEFAULT_TIMEOUT:g}. Waiting for a "
        "token is never limited.",
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

    def __init__(self, kind: str, source: Optional[str], detail: str, path: Optional[str] = None) -> None:
        # kind: "none", "fifo", "pipe" or "broken"
        self.kind = kind
        self.source = source
        self.detail = detail
        self.path = path


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
        return _Probe("broken", source, f"{e.message} [{e.code}]", path)
    try:
        flags = agent.makeflags()
    except AgentError as e:
        return _Probe("broken", source, f"{e.message} [{e.code}]", path)
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


# -- state --------------------------------------------------------------------------------


class _State:
    """Per process: the token the current test holds, and (in a worker) the agent."""

    def __init__(self) -> None:
        self.current: Optional[int] = None


class _Controller(_State):
    """The process the user started: the header, and what each xdist worker is told."""

    def __init__(self, probe: _Probe, distributed: bool) -> None:
        super().__init__()
        self.probe = probe
        self.distributed = distributed
        self.implicit_owner: Optional[str] = None

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        p = self.probe
        if p.kind == "none":
            return [f"jobserver: none ({p.detail}); taking no tokens"]
        where = f"{p.detail} (from {p.source})"
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

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:  # type: ignore[no-untyped-def]
        # A crashed gw0 is replaced by a worker with a new id: hand it the implicit slot.
        if error is not None and node.workerinput.get("workerid") == self.implicit_owner:
            self.implicit_owner = None


class _Worker(_State):
    """An xdist worker that pays for its tests with tokens.

    If the jobserver goes away in the middle of the run (its server stopped, its agent killed),
    the worker does not crash: the test that could get no token errors with the reason in its
    setup, and the worker asks xdist to stop the run ("Interrupted: jobserver: ...").
    """

    def __init__(self, config: pytest.Config, env: Mapping[str, str], path: Optional[str], source: str) -> None:
        super().__init__()
        self.env = env
        self.path = path
        self.source = source
        self.timeout = _timeout(config, env)
        self.agent: Optional[Agent] = None
        self.lost: Optional[str] = None
        self.where = f"{path} (from {source})" if path else f"the jobserver from {source}"

    def _drop_agent(self) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            agent.close()

    def _lose(self, session: pytest.Session, why: str) -> None:
        self._drop_agent()
        if self.lost is None:
            self.lost = why
        session.shouldstop = f"jobserver: {self.lost}"

    def _acquire(self, session: pytest.Session) -> Optional[int]:
        """A token, or None once the jobserver is lost (then the session is told to stop)."""
        if self.lost is not None:
            return None
        try:
            if self.agent is None:
                self.agent = Agent(find_agent(self.env), jobserver=self.path, env=_agent_env(self.env), timeout=self.timeout)
            token = self.agent.acquire()
        except AgentError as e:
            what = "giving a token back failed" if e.request.startswith("release") else "cannot take a token"
            self._lose(session, f"{self.where}: {what}: {e}")
            return None
        except BaseException:
            # Interrupted while waiting (Ctrl-C): a reply may still come, so this agent is out
            # of step. Closing its stdin cancels the wait and gives everything back.
            self._drop_agent()
            raise
        self.current = token
        return token

    def _release(self, session: pytest.Session, token: Optional[int]) -> None:
        self.current = None
        if token is None or self.agent is None:
            return
        try:
            # Not waiting for the reply: the next acquire (or the agent's EOF) checks it.
            self.agent.release(token, wait=False)
        except AgentError as e:
            self._lose(session, f"{self.where}: giving token {token} back failed: {e}")

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_collection(self, session: pytest.Session):  # type: ignore[no-untyped-def]
        token = self._acquire(session)
        try:
            yield
        finally:
            self._release(session, token)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Optional[pytest.Item]):  # type: ignore[no-untyped-def]
        token = self._acquire(item.session)
        if token is None:
            item.stash[_NO_TOKEN] = self.lost or "no token"
        try:
            yield
        finally:
            self._release(item.session, token)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        why = item.stash.get(_NO_TOKEN, None)
        if why is not None:
            pytest.fail(f"jobserver: {why}; not running this test without a token, stopping the run", pytrace=False)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._drop_agent()


# -- wiring -------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    env = dict(os.environ)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        timeout = _timeout(config, env)
        distributed = _is_distributed(config)
        probe = _probe(config, env, timeout)
        if distributed and probe.kind == "pipe":
            raise pytest.UsageError(
                f"jobserver: {probe.source} names a pipe jobserver ({probe.detail}), and pytest-xdist "
                "workers cannot use one: they start with every inherited file descriptor closed. "
                "Use a named jobserver: GNU make >= 4.4 with its default --jobserver-style=fifo, steved "
                "(MAKEFLAGS=--jobserver-auth=fifo:/run/steved/jobserver), or --jobserver PATH / "
                "PYTEST_JOBSERVER=PATH; or run without -n."
            )
        if distributed and probe.kind == "broken":
            raise pytest.UsageError(f"jobserver: cannot use the jobserver named by {probe.source}: {probe.detail}")
        state: _State = _Controller(probe, distributed)
    else:
        # The controller resolved the jobserver and chose the implicit worker (gw0, or the
        # replacement of a crashed gw0). Without its keys it did not load this plugin: idle.
        path = workerinput.get(_WI_PATH)
        implicit = workerinput.get(_WI_IMPLICIT, True)
        if path is not None and not implicit:
            state = _Worker(config, env, path, workerinput.get(_WI_SOURCE) or "")
        else:
            state = _State()
    config.stash[_STATE] = state
    config.pluginmanager.register(state, "jobserver-state")


def held_token(config: pytest.Config) -> Optional[int]:
    """The id of the token this process holds right now (None: the implicit slot or no jobserver)."""
    state = config.stash.get(_STATE, None)
    return state.current if state is not None else None


@pytest.fixture
def jobserver_token(request: pytest.FixtureRequest) -> Optional[int]:
    """The id (1, 2, ...) of the jobserver token held for this test, given out by this worker's
    jobclient agent; None in gw0, without xdist, or without a jobserver."""
    return held_token(request.config)
