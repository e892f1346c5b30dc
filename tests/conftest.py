"""Shared fixtures: tier markers, the private systemd user manager, and the settle check.

Tiers follow directories: tests/unit (marker ``unit``), tests/systemd (``systemd``),
tests/e2e (``e2e``), tests/vllm (``vllm``); select one with ``-m``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import LONG_LIVED_CHILDREN, UserManager, user_manager_available
from harness.ci import allowed_in_ci, in_ci, missing

TESTS = Path(__file__).parent
TIERS = ("unit", "systemd", "e2e", "system", "vllm")
_SETTLE_GRACE = 1.0  # seconds a just-stopped child may take to be reaped


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    bad = _skips_not_allowed_in_ci(terminalreporter)
    if bad:
        terminalreporter.write_line(f"CI: {len(bad)} skip(s) not allowed in CI (tests/harness/ci.py):", red=True)
        for line in bad:
            terminalreporter.write_line(f"  {line}", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, a skip that is not on the short allowlist fails the run: a tier that silently did
    not run is not a green run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if exitstatus == 0 and reporter is not None and _skips_not_allowed_in_ci(reporter):
        session.exitstatus = 1


def _skips_not_allowed_in_ci(reporter) -> list[str]:  # noqa: ANN001 - pytest's TerminalReporter
    if not in_ci():
        return []
    bad = []
    for report in reporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not allowed_in_ci(reason):
            bad.append(f"{report.nodeid}: {reason}")
    return bad


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            tier = item.path.relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def user_manager() -> Iterator[UserManager]:
    """One private ``systemd --user`` per session (see agent/testing/user_manager.py).

    Clients in this process reach it through sd_bus_open_user(), which reads only the process
    environment: for the session, XDG_RUNTIME_DIR points at the manager and
    DBUS_SESSION_BUS_ADDRESS is unset; both are restored afterwards. Subprocesses get
    ``user_manager.env``.
    """
    reason = user_manager_available()
    if reason:
        missing(f"a systemd user manager: {reason}")
    manager = UserManager.boot()
    saved = {name: os.environ.get(name) for name in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")}
    os.environ["XDG_RUNTIME_DIR"] = str(manager.runtime_dir)
    os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
    try:
        yield manager
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        manager.close()


@pytest.fixture(autouse=True)
def settle(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test (and its fixtures): no child processes, running units or asyncio tasks
    left behind. Each is reported and cleaned up, and the test fails."""
    children_before = _children()
    loop = _test_loop(request)
    yield
    problems = []
    leaked = _wait_for_children_to_go(children_before)
    if leaked:
        problems.append(f"child processes left running (now killed): {', '.join(map(_describe, leaked))}")
        for pid in leaked:
            _kill_and_reap(pid)
    if "user_manager" in request.fixturenames:
        manager: UserManager = request.getfixturevalue("user_manager")
        units = manager.leftover_units()
        if units:
            manager.stop_all()
            problems.append(f"units left active (now stopped): {', '.join(units)}")
    if loop is not None:
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        if tasks:
            problems.append(f"asyncio tasks left pending: {', '.join(repr(t.get_coro()) for t in tasks)}")
    if problems:
        pytest.fail("test did not settle: " + "; ".join(problems), pytrace=False)


def _test_loop(request: pytest.FixtureRequest):  # noqa: ANN202 - asyncio loop or None
    """The event loop an async test runs in (pytest-asyncio's function-scoped runner), or None.
    Requested here, first, so that it is torn down after this check."""
    function = getattr(request.node, "obj", None)
    if not inspect.iscoroutinefunction(function):
        return None
    marker = request.node.get_closest_marker("asyncio")
    if marker is not None and marker.kwargs.get("loop_scope", "function") != "function":
        return None
    return request.getfixturevalue("_function_scoped_runner").get_loop()


def _children() -> set[int]:
    """Pids whose parent is this process (from /proc: cheap, no psutil)."""
    me = os.getpid()
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == me:
            found.add(int(entry.name))
    return found


def _describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = "?"
    return f"{pid} ({command.strip()[:80] or 'zombie'})"


def _wait_for_children_to_go(before: set[int]) -> list[int]:
    deadline = time.monotonic() + _SETTLE_GRACE
    while True:
        leaked = _children() - before - LONG_LIVED_CHILDREN
        if not leaked or time.monotonic() > deadline:
            return sorted(leaked)
        time.sleep(0.05)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass  # gone, or reaped by its owner meanwhile
