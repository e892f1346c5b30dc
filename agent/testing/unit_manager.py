"""An in-memory UnitManager that behaves like systemd 252 where the contract tests look.

tests/systemd/test_unit_manager_contract.py runs the same tests against this fake and the real
client, so what passes here holds for systemd. States follow what systemd reports (observed on
252): a stop clears the invocation id and NRestarts, a failed start keeps its invocation id,
inactive units nobody references are not listed.

A FakeUnit declares what its unit file would, and the fake models, as systemd 252 does:

- ``Type=`` simple or notify. A simple unit is active once its process runs. A notify unit stays
  ``activating``/``start`` until its main process sends READY=1 (``ready()``); its start job
  finishes only then, "failed" when the process dies first (Result ``protocol`` if it exited
  0), "canceled" when a stop or restart replaces it. A start while one is under way joins it.
- ``Restart=`` no, always or on-failure, after the main process ends (``crash()``, a watchdog,
  or ``exit_status``). A clean end is exit 0 or SIGHUP/SIGINT/SIGTERM/SIGPIPE; on-failure
  restarts the rest. A restart is immediate (no RestartSec) and counts in NRestarts.
- ``RestartPreventExitStatus=``: an exit with a listed status is never restarted.
- ``StartLimitBurst=``/``StartLimitIntervalSec=`` ([Unit]; defaults 5 and 10 s, 0 disables):
  every start counts, manual or automatic, in a window that opens at the first start. A start
  beyond the burst is refused: its job fails and the unit is ``failed``. Its Result reads
  ``start-limit-hit`` only if the unit had not failed already: a crash loop that runs into the
  limit keeps the Result of its last crash (``exit-code``, ``signal``). Further starts are
  refused until reset_failed() or the window passes. A unit that becomes inactive nobody
  references is unloaded, which forgets its count: starts separated by stops do not add up.
- ``WatchdogSec=``: ``watchdog_timeout()`` stands for WatchdogSec passing without WATCHDOG=1
  (armed only once the unit is active); ``watchdog_trigger()`` for WATCHDOG=trigger, which needs
  no WatchdogSec. systemd kills the main process with SIGABRT, Result ``watchdog``, then
  Restart= applies.

Not modelled: RestartSec (restarts are immediate; the auto-restart state is only passed
through), start and stop timeouts, ExecStartPre/Post, units kept loaded by a reference
(an enabled unit's target; their count survives a stop), RestartPreventExitStatus= signals.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from vllm_agent.errors import SystemdClientClosed, SystemdUnavailable, UnitNotFound
from vllm_agent.systemd.model import (
    CLD_DUMPED,
    CLD_EXITED,
    CLD_KILLED,
    DEFAULT_PATTERNS,
    UnitEvent,
    UnitState,
    check_unit_name,
)

_RECONNECT_DELAYS = (0.01, 0.05, 0.1)
_CLEAN_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)
_FAILURE_RESULTS = {CLD_EXITED: "exit-code", CLD_KILLED: "signal", CLD_DUMPED: "core-dump"}


@dataclass(frozen=True)
class FakeUnit:
    """A unit file as far as the fake reads one, and what its main process does. Fields are
    named after the settings they stand for; the defaults are systemd's."""

    type: Literal["simple", "notify"] = "simple"  # Type=
    restart: Literal["no", "always", "on-failure"] = "no"  # Restart=
    restart_prevent_exit_status: tuple[int, ...] = ()  # RestartPreventExitStatus=
    start_limit_burst: int = 5  # [Unit] StartLimitBurst=
    start_limit_interval_sec: float = 10.0  # [Unit] StartLimitIntervalSec=; 0: no limit
    watchdog_sec: float = 0.0  # WatchdogSec=; 0: off
    # The main process exits with this status as soon as it runs (a notify unit's before
    # READY=1); None: it runs until stopped, crash()ed or killed by the watchdog.
    exit_status: int | None = None

    @property
    def start_limited(self) -> bool:
        return self.start_limit_burst > 0 and self.start_limit_interval_sec > 0

    def restarts_after(self, result: str, code: int, status: int) -> bool:
        """Whether systemd restarts the unit after its main process ended so (service_shall_restart)."""
        if code == CLD_EXITED and status in self.restart_prevent_exit_status:
            return False
        return self.restart == "always" or (self.restart == "on-failure" and result != "success")


@dataclass
class _StartLimit:
    """systemd's ratelimit_below(): ``burst`` starts per window, from the first start on."""

    begin: float | None = None
    count: int = 0

    def allows(self, unit: FakeUnit, now: float) -> bool:
        if not unit.start_limited:
            return True
        if self.begin is None or now - self.begin > unit.start_limit_interval_sec:
            self.begin, self.count = now, 0
        self.count += 1
        return self.count <= unit.start_limit_burst


class _Job:
    """A start job: finished at once, or, for a notify unit, when it is ready, fails or is canceled."""

    def __init__(self) -> None:
        self.result = ""
        self.finished = asyncio.Event()


class FakeUnitManager:
    """model.UnitManager in memory, plus helpers for tests: define(), crash(), ready(),
    watchdog_timeout(), watchdog_trigger(), drop_connection(), set_reachable(). ``calls``
    records the commands, (method, unit), in order; reads (get_state, list_units) are not
    recorded. ``clock`` (monotonic seconds) times start-limit windows."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.units: dict[str, FakeUnit] = {}
        self.processes: set[int] = set()  # main pids that "run"
        self.calls: list[tuple[str, str]] = []
        self.reloads = 0
        self.reachable = True
        self.closed = False
        self._clock = clock
        self._states: dict[str, UnitState] = {}
        self._limits: dict[str, _StartLimit] = {}
        self._jobs: dict[str, _Job] = {}  # start jobs under way (notify units not yet ready)
        self._watches: set[FakeUnitWatch] = set()
        self._pids = itertools.count(40_000)

    # -- test helpers ----------------------------------------------------------------------

    def define(self, unit: str, behaviour: FakeUnit = FakeUnit()) -> None:
        """Install a unit file (daemon-reload included)."""
        status = behaviour.exit_status
        if status is not None and not behaviour.start_limited:
            result = "exit-code" if status else "protocol" if behaviour.type == "notify" else "success"
            if behaviour.restarts_after(result, CLD_EXITED, status):
                raise AssertionError(f"{unit} would restart forever: give it a start limit")
        self.units[check_unit_name(unit)] = behaviour
        self._states.setdefault(unit, _initial(unit))

    def crash(self, unit: str, *, status: int = signal.SIGKILL, code: int = CLD_KILLED) -> None:
        """The main process dies (by default: SIGKILL); systemd reacts as its unit says."""
        self._ended(unit, status=status, code=code)

    def ready(self, unit: str) -> None:
        """The main process of a starting notify unit sends READY=1: it is active, its start job done."""
        job = self._jobs.pop(unit, None)
        assert job is not None, f"{unit} is not a notify unit waiting for READY=1"
        self._set(unit, active_state="active", sub_state="running", active_enter_timestamp=_now())
        self._finish(unit, job, "done")

    def watchdog_timeout(self, unit: str) -> None:
        """WatchdogSec passes without WATCHDOG=1 (the watchdog runs once the unit is active)."""
        state = self._states[unit]
        assert self.units[unit].watchdog_sec > 0, f"{unit} has no WatchdogSec="
        assert state.sub_state == "running", f"{unit} is {state.sub_state}: its watchdog is not armed"
        self._ended(unit, status=signal.SIGABRT, code=CLD_KILLED, result="watchdog")

    def watchdog_trigger(self, unit: str) -> None:
        """The main process sends WATCHDOG=trigger: systemd acts as on a watchdog timeout."""
        self._ended(unit, status=signal.SIGABRT, code=CLD_KILLED, result="watchdog")

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
        if self._states[unit].active_state == "active":
            return self._job_done(unit, "done", wait)
        job = self._jobs.get(unit) or self._attempt(unit)  # a start under way is joined
        return await _result(job, wait)

    async def stop(self, unit: str, *, wait: bool = True) -> str:
        self._call("stop", unit)
        state = self._states.get(unit)
        if state is None:
            return "done"  # not loaded: nothing runs that could be stopped
        self._cancel(unit)
        if state.active_state in ("active", "activating"):
            self.processes.discard(state.main_pid)
            self._set(unit, **_STOPPED)
            self._limits.pop(unit, None)  # inactive and unreferenced: systemd unloads it
        return self._job_done(unit, "done", wait)

    async def restart(self, unit: str, *, wait: bool = True) -> str:
        self._call("restart", unit)
        if unit not in self.units:
            raise _not_found("restart", unit)
        self._cancel(unit)
        main_pid = self._states[unit].main_pid
        if main_pid:  # the stop half: SIGTERM, and the unit stays loaded for the start half
            self.processes.discard(main_pid)
            self._set(
                unit,
                active_state="deactivating",
                sub_state="stop-sigterm",
                main_pid=0,
                exec_main_status=signal.SIGTERM,
                exec_main_code=CLD_KILLED,
            )
        return await _result(self._attempt(unit), wait)

    async def reset_failed(self, unit: str) -> None:
        self._call("reset-failed", unit)
        state = self._states.get(unit)
        self._limits.pop(unit, None)  # the start-limit count is reset whatever the state
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

    def _attempt(self, unit: str, *, automatic: bool = False) -> _Job:
        """One start of the unit, by a client or by Restart=; its job, finished unless a notify
        unit waits for READY=1. An automatic restart counts in NRestarts even when refused."""
        behaviour, job, earlier = self.units[unit], _Job(), self._states[unit]
        n_restarts = earlier.n_restarts + 1 if automatic else 0
        limit = self._limits.setdefault(unit, _StartLimit())
        if not limit.allows(behaviour, self._clock()):
            result = "start-limit-hit" if earlier.result == "success" else earlier.result  # a failure stays
            self._set(
                unit,
                active_state="failed",
                sub_state="failed",
                main_pid=0,
                result=result,
                n_restarts=n_restarts if automatic else earlier.n_restarts,
            )
            self._finish(unit, job, "failed")
            return job
        pid = next(self._pids)
        self.processes.add(pid)
        running = dict(
            main_pid=pid,
            result="success",
            exec_main_status=0,
            exec_main_code=0,
            n_restarts=n_restarts,
            invocation_id=uuid.uuid4().hex,
        )
        if behaviour.type == "notify":
            self._set(unit, active_state="activating", sub_state="start", **running)
            self._jobs[unit] = job
        else:
            self._set(unit, active_state="active", sub_state="running", active_enter_timestamp=_now(), **running)
            self._finish(unit, job, "done")
        if behaviour.exit_status is not None:
            self._ended(unit, status=behaviour.exit_status, code=CLD_EXITED)
        return job

    def _ended(self, unit: str, *, status: int, code: int, result: str | None = None) -> None:
        """The main process ended; a start under way fails, and Restart= decides what follows."""
        state, behaviour = self._states[unit], self.units[unit]
        assert state.main_pid, f"{unit} has no main process"
        self.processes.discard(state.main_pid)
        job = self._jobs.pop(unit, None)
        clean = (code == CLD_EXITED and status == 0) or (code == CLD_KILLED and status in _CLEAN_SIGNALS)
        if result is None:
            result = "success" if clean else _FAILURE_RESULTS[code]
            if job is not None and result == "success":
                result = "protocol"  # a notify unit's process ended without READY=1
        ended = dict(main_pid=0, exec_main_status=int(status), exec_main_code=code, result=result)
        if behaviour.restarts_after(result, code, status):
            self._set(unit, active_state="activating", sub_state="auto-restart", **ended)
            if job is not None:
                self._finish(unit, job, "failed")
            self._attempt(unit, automatic=True)
            return
        if result == "success":
            self._set(unit, active_state="inactive", sub_state="dead", **ended)
            self._limits.pop(unit, None)  # inactive and unreferenced: systemd unloads it
        else:
            self._set(unit, active_state="failed", sub_state="failed", **ended)
        if job is not None:
            self._finish(unit, job, "failed")

    def _cancel(self, unit: str) -> None:
        """A stop or restart job replaces the start job under way."""
        job = self._jobs.pop(unit, None)
        if job is not None:
            self._finish(unit, job, "canceled")

    def _finish(self, unit: str, job: _Job, result: str) -> None:
        job.result = result
        job.finished.set()
        self._emit(UnitEvent("job", unit, self._states[unit], result))

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


async def _result(job: _Job, wait: bool) -> str:
    if not wait:
        return "queued"
    await job.finished.wait()
    return job.result


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
