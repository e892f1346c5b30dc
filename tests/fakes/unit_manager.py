"""An in-memory UnitManager that behaves like systemd 252 where the contract tests look.

tests/systemd/test_unit_manager_contract.py runs the same tests against this fake and the real
client, so what passes here holds for systemd. States follow what systemd reports (observed on
252): a stop clears the invocation id and NRestarts, a failed start keeps its invocation id,
inactive units nobody references are not listed.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from vllm_agent.errors import SystemdClientClosed, SystemdUnavailable, UnitNotFound
from vllm_agent.systemd.model import (
    CLD_EXITED,
    CLD_KILLED,
    DEFAULT_PATTERNS,
    UnitEvent,
    UnitState,
    check_unit_name,
)

_RECONNECT_DELAYS = (0.01, 0.05, 0.1)


@dataclass(frozen=True)
class FakeUnit:
    """How a defined unit behaves."""

    start_result: Literal["done", "failed"] = "done"
    exit_status: int = 0  # the main process's exit status when the start fails
    restart_always: bool = False  # Restart=always: after a crash systemd starts it again


class FakeUnitManager:
    """model.UnitManager in memory, plus helpers for tests: define(), crash(),
    drop_connection(), set_reachable(). ``calls`` records the commands, (method, unit), in
    order; reads (get_state, list_units) are not recorded."""

    def __init__(self) -> None:
        self.units: dict[str, FakeUnit] = {}
        self.processes: set[int] = set()  # main pids that "run"
        self.calls: list[tuple[str, str]] = []
        self.reloads = 0
        self.reachable = True
        self.closed = False
        self._states: dict[str, UnitState] = {}
        self._watches: set[FakeUnitWatch] = set()
        self._pids = itertools.count(40_000)

    # -- test helpers ----------------------------------------------------------------------

    def define(self, unit: str, behaviour: FakeUnit = FakeUnit()) -> None:
        """Install a unit file (daemon-reload included)."""
        self.units[check_unit_name(unit)] = behaviour
        self._states.setdefault(unit, _initial(unit))

    def crash(self, unit: str, *, status: int = 9, code: int = CLD_KILLED) -> None:
        """The main process dies (by default: SIGKILL); systemd reacts as its unit says."""
        state = self._states[unit]
        assert state.main_pid, f"{unit} has no main process to crash"
        self.processes.discard(state.main_pid)
        clean = code == CLD_EXITED and status == 0
        result = "success" if clean else ("exit-code" if code == CLD_EXITED else "signal")
        ended = dict(main_pid=0, exec_main_status=status, exec_main_code=code, result=result)
        if not self.units[unit].restart_always:
            self._set(
                unit, active_state="inactive" if clean else "failed", sub_state="dead" if clean else "failed", **ended
            )
            return
        self._set(unit, active_state="activating", sub_state="auto-restart", **ended)
        self._run(unit, n_restarts=state.n_restarts + 1)
        self._emit(UnitEvent("job", unit, self._states[unit], "done"))

    def drop_connection(self) -> None:
        """The bus connection is lost: watches miss what happens until they reconnect."""
        for watch in self._watches:
            watch.disconnect()

    def set_reachable(self, reachable: bool) -> None:
        """False: calls raise SystemdUnavailable and watches retry until it is True again."""
        self.reachable = reachable
        if not reachable:
            self.drop_connection()

    # -- UnitManager -------------------------------------------------------------------------

    async def start(self, unit: str, *, wait: bool = True) -> str:
        self._call("start", unit)
        if unit not in self.units:
            raise _not_found("start", unit)
        result = "done" if self._states[unit].active_state == "active" else self._start(unit)
        return self._job_done(unit, result, wait)

    async def stop(self, unit: str, *, wait: bool = True) -> str:
        self._call("stop", unit)
        state = self._states.get(unit)
        if state is None:
            return "done"  # not loaded: nothing runs that could be stopped
        if state.active_state in ("active", "activating"):
            self.processes.discard(state.main_pid)
            self._set(unit, **_STOPPED)
        return self._job_done(unit, "done", wait)

    async def restart(self, unit: str, *, wait: bool = True) -> str:
        self._call("restart", unit)
        if unit not in self.units:
            raise _not_found("restart", unit)
        self.processes.discard(self._states[unit].main_pid)
        return self._job_done(unit, self._start(unit), wait)

    async def reset_failed(self, unit: str) -> None:
        self._call("reset-failed", unit)
        state = self._states.get(unit)
        if state is not None and state.active_state == "failed":
            self._set(unit, **_STOPPED)

    async def reload(self) -> None:
        self._call("daemon-reload", "")
        self.reloads += 1

    async def get_state(self, unit: str) -> UnitState:
        check_unit_name(unit)
        self._usable()
        return self._states.get(unit) or UnitState.not_found(unit)

    async def list_units(self, patterns: Sequence[str] = DEFAULT_PATTERNS) -> list[UnitState]:
        self._usable()
        return self._listed(patterns)

    def watch(self, patterns: Sequence[str] = DEFAULT_PATTERNS) -> FakeUnitWatch:
        return FakeUnitWatch(self, patterns)

    async def close(self) -> None:
        self.closed = True
        for watch in list(self._watches):
            watch.disconnect()

    # -- inside ------------------------------------------------------------------------------

    def _usable(self) -> None:
        if self.closed:
            raise SystemdClientClosed("the systemd client is closed")
        if not self.reachable:
            raise SystemdUnavailable("systemd is not reachable (fake)", hint="set_reachable(True)")

    def _call(self, method: str, unit: str) -> None:
        if method != "daemon-reload":
            check_unit_name(unit)
        self._usable()
        self.calls.append((method, unit))

    def _listed(self, patterns: Sequence[str]) -> list[UnitState]:
        # systemd unloads inactive units nobody references; they drop out of listings.
        return [
            state
            for name, state in sorted(self._states.items())
            if _matches(name, patterns) and state.active_state != "inactive"
        ]

    def _start(self, unit: str) -> str:
        """Run the start job; return its result."""
        behaviour = self.units[unit]
        if behaviour.start_result == "done":
            self._run(unit, n_restarts=0)
        else:
            self._set(
                unit,
                active_state="failed",
                sub_state="failed",
                result="exit-code",
                main_pid=0,
                exec_main_status=behaviour.exit_status,
                exec_main_code=CLD_EXITED,
                invocation_id=uuid.uuid4().hex,
                n_restarts=0,
            )
        return behaviour.start_result

    def _run(self, unit: str, *, n_restarts: int) -> None:
        pid = next(self._pids)
        self.processes.add(pid)
        self._set(
            unit,
            active_state="active",
            sub_state="running",
            result="success",
            main_pid=pid,
            exec_main_status=0,
            exec_main_code=0,
            n_restarts=n_restarts,
            invocation_id=uuid.uuid4().hex,
            active_enter_timestamp=_now(),
        )

    def _job_done(self, unit: str, result: str, wait: bool) -> str:
        self._emit(UnitEvent("job", unit, self._states[unit], result))
        return result if wait else "queued"

    def _set(self, unit: str, **changes: object) -> None:
        state = replace(self._states[unit], state_change_timestamp=_now(), **changes)  # type: ignore[arg-type]
        self._states[unit] = state
        self._emit(UnitEvent("changed", unit, state))

    def _emit(self, event: UnitEvent) -> None:
        for watch in self._watches:
            watch.deliver(event)


class FakeUnitWatch:
    """model.UnitWatch for the fake: listens from creation, resyncs after a lost connection."""

    def __init__(self, fake: FakeUnitManager, patterns: Sequence[str]) -> None:
        self._fake = fake
        self._patterns = tuple(patterns)
        self._queue: asyncio.Queue[UnitEvent | None] = asyncio.Queue()
        self._connected = fake.reachable and not fake.closed
        fake._watches.add(self)
        self._events = self._run()

    def __aiter__(self) -> FakeUnitWatch:
        return self

    async def __anext__(self) -> UnitEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()
        self._fake._watches.discard(self)

    def deliver(self, event: UnitEvent) -> None:
        if self._connected and _matches(event.unit, self._patterns):
            self._queue.put_nowait(event)

    def disconnect(self) -> None:
        self._connected = False
        while not self._queue.empty():  # signals not yet read die with the connection
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def _run(self) -> AsyncIterator[UnitEvent]:
        try:
            while True:
                if not self._connected:
                    for delay in itertools.chain(_RECONNECT_DELAYS, itertools.repeat(_RECONNECT_DELAYS[-1])):
                        if self._fake.closed:
                            return
                        if self._fake.reachable:
                            break
                        await asyncio.sleep(delay)
                    self._connected = True
                    self._queue = asyncio.Queue()
                    for state in self._fake._listed(self._patterns):
                        yield UnitEvent("resync", state.name, state)
                    continue
                event = await self._queue.get()
                if event is not None:
                    yield event
        finally:
            self._fake._watches.discard(self)


_STOPPED = dict(
    active_state="inactive",
    sub_state="dead",
    result="success",
    main_pid=0,
    exec_main_status=0,
    exec_main_code=0,
    invocation_id="",
    n_restarts=0,
)


def _initial(unit: str) -> UnitState:
    return replace(UnitState.not_found(unit), load_state="loaded")


def _matches(unit: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(unit, pattern) for pattern in patterns)


def _now() -> int:
    return time.time_ns() // 1000


def _not_found(action: str, unit: str) -> UnitNotFound:
    return UnitNotFound(
        f"{action} {unit}: Unit {unit} not found. (org.freedesktop.systemd1.NoSuchUnit)",
        hint="is its unit file installed? run daemon-reload after writing unit files",
    )
