"""Where the UnitManager contract tests run: the in-memory fake or a real user manager.

A test declares each unit once, as a FakeUnit: the fake reads it as it is, and the real user
manager gets the unit file unit_file() renders from it. Each backend also stands in for what a
unit's own process does (crash, READY=1, WATCHDOG=trigger) and for time passing (a watchdog
timeout): the fake through its helpers, systemd by signalling the real process and waiting for
systemd to react.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import UserManager
from vllm_agent.systemd import UnitEvent, UnitManager, UnitState, UnitWatch
from vllm_agent.testing.unit_manager import FakeUnit, FakeUnitManager

_units = itertools.count()
EVENT_TIMEOUT = 10.0
UNIT_MAIN = Path(__file__).with_name("unit_main.py")

# The kinds of unit most tests use; a test declares its own FakeUnit for anything else.
UNITS = {
    "sleeps": FakeUnit(),
    # Type=notify: the start job waits for READY=1, so an early exit fails the job itself.
    "fails": FakeUnit(type="notify", exit_status=3),
    "restarts": FakeUnit(restart="always", start_limit_interval_sec=0),
}


def unit_file(unit: FakeUnit) -> str:
    """The unit file that declares to systemd what ``unit`` declares to the fake. The main process
    is unit_main.py (it runs until stopped, sends READY=1 on SIGUSR1 and WATCHDOG=trigger on
    SIGUSR2), or a shell that exits at once with ``exit_status``."""
    if unit.exit_status is None:
        assert " " not in f"{sys.executable}{UNIT_MAIN}", "unit_main.py's path must not need quoting"
        exec_start = f"{sys.executable} {UNIT_MAIN}"
    else:
        exec_start = f"/bin/sh -c 'exit {unit.exit_status}'"
    lines = [
        "[Unit]",
        f"StartLimitBurst={unit.start_limit_burst}",
        f"StartLimitIntervalSec={unit.start_limit_interval_sec:g}s",
        "[Service]",
        f"Type={unit.type}",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        f"Restart={unit.restart}",
        "RestartSec=100ms",
    ]
    if unit.restart_prevent_exit_status:
        lines.append(f"RestartPreventExitStatus={' '.join(map(str, unit.restart_prevent_exit_status))}")
    if unit.watchdog_sec:
        lines.append(f"WatchdogSec={unit.watchdog_sec:g}s")
    return "\n".join(lines) + "\n"


class FakeBackend:
    def __init__(self) -> None:
        self.fake = FakeUnitManager()
        self.manager: UnitManager = self.fake
        self.prefix = f"contract{next(_units)}"

    def define(self, kind: str, unit: FakeUnit | None = None) -> str:
        """A new unit named after ``kind``, as ``unit`` (by default UNITS[kind]) declares."""
        name = f"{self.prefix}-{kind}-{next(_units)}.service"
        self.fake.define(name, unit or UNITS[kind])
        return name

    async def crash(self, unit: str, sig: int = signal.SIGKILL) -> None:
        self.fake.crash(unit, status=sig)

    async def ready(self, unit: str) -> None:
        self.fake.ready(unit)

    async def watchdog_timeout(self, unit: str) -> None:
        self.fake.watchdog_timeout(unit)

    async def watchdog_trigger(self, unit: str) -> None:
        self.fake.watchdog_trigger(unit)

    def drop_connection(self) -> None:
        self.fake.drop_connection()

    def process_exists(self, pid: int) -> bool:
        return pid in self.fake.processes

    async def close(self) -> None:
        await self.fake.close()


class SystemdBackend:
    """The real user manager. Helpers that stand for something a unit's process does signal
    that process, then wait, through systemctl rather than the client under test, until systemd
    has reacted."""

    def __init__(self, user_manager: UserManager, manager: UnitManager) -> None:
        self.user_manager = user_manager
        self.manager = manager
        self.prefix = f"contract{next(_units)}"
        self._units: dict[str, FakeUnit] = {}

    def define(self, kind: str, unit: FakeUnit | None = None) -> str:
        name = f"{self.prefix}-{kind}-{next(_units)}.service"
        self._units[name] = unit or UNITS[kind]
        self.user_manager.write_unit(name, unit_file(self._units[name]))
        self.user_manager.daemon_reload()
        return name

    async def crash(self, unit: str, sig: int = signal.SIGKILL) -> None:
        """Kill the main process with ``sig``; return once systemd restarted it or let it end."""
        before = self.user_manager.show(unit, "MainPID", "NRestarts")
        os.kill(int(before["MainPID"]), sig)
        await self._reacted(unit, before)

    async def ready(self, unit: str) -> None:
        """The main process sends READY=1 (SIGUSR1 to unit_main.py, once it handles it)."""
        waiting = await self._waiting(unit)
        os.kill(int(waiting["MainPID"]), signal.SIGUSR1)

    async def watchdog_timeout(self, unit: str) -> None:
        """Wait until WatchdogSec has passed without a ping and systemd has acted."""
        before = self.user_manager.show(unit, "MainPID", "NRestarts")
        await self._reacted(unit, before, timeout=EVENT_TIMEOUT + self._units[unit].watchdog_sec)

    async def watchdog_trigger(self, unit: str) -> None:
        """The main process sends WATCHDOG=trigger (SIGUSR2 to unit_main.py)."""
        before = await self._waiting(unit)
        os.kill(int(before["MainPID"]), signal.SIGUSR2)
        await self._reacted(unit, before)

    async def _waiting(self, unit: str) -> dict[str, str]:
        """Until unit_main.py runs as the unit's main process and handles its signals."""
        return await self._until(
            unit,
            lambda now: now["MainPID"] != "0" and now["StatusText"] == f"waiting {now['MainPID']}",
            "to wait for signals",
        )

    async def _reacted(self, unit: str, before: dict[str, str], timeout: float = EVENT_TIMEOUT) -> None:
        """Until the main process ``before`` names has ended and systemd has restarted the unit
        (a new main process) or left it failed or inactive."""

        def reacted(now: dict[str, str]) -> bool:
            if now["SubState"] in ("failed", "dead"):
                return True
            restarted = int(now["NRestarts"]) > int(before["NRestarts"])
            return restarted and now["MainPID"] not in ("0", before["MainPID"])

        await self._until(unit, reacted, "to react", timeout)

    async def _until(
        self, unit: str, condition: Callable[[dict[str, str]], bool], what: str, timeout: float = EVENT_TIMEOUT
    ) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while not condition(now := self.user_manager.show(unit, "MainPID", "NRestarts", "SubState", "StatusText")):
            if time.monotonic() > deadline:
                raise AssertionError(f"systemd did not get {unit} {what} within {timeout:g} s: {now}")
            await asyncio.sleep(0.05)
        return now

    def drop_connection(self) -> None:
        self.manager._drop_connection_for_tests()  # type: ignore[attr-defined]

    def process_exists(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def close(self) -> None:
        await self.manager.close()
        if self._units:
            self.user_manager.systemctl("stop", *self._units)
            self.user_manager.systemctl("reset-failed", *self._units, check=False)


Backend = FakeBackend | SystemdBackend


async def next_event(events: UnitWatch, wanted: Callable[[UnitEvent], bool]) -> UnitEvent:
    """The first event that is ``wanted``, skipping the others."""
    async with asyncio.timeout(EVENT_TIMEOUT):
        async for event in events:
            if wanted(event):
                return event
    raise AssertionError("the watch ended")


async def state_where(manager: UnitManager, unit: str, wanted: Callable[[UnitState], bool]) -> UnitState:
    """The unit's state once it is ``wanted``, read through ``manager`` until EVENT_TIMEOUT."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    while not wanted(state := await manager.get_state(unit)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{unit} did not get there within {EVENT_TIMEOUT:g} s: {state}")
        await asyncio.sleep(0.02)
    return state
