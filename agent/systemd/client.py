"""The real UnitManager: a systemd manager driven over D-Bus.

Every sdbus error is turned into an AgentError here (see errors.agent_error). A lost connection
is re-opened on the next call; watches re-open it themselves, with backoff, and then yield
"resync" events.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import os
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager

from sdbus import SdBusBaseError

from ..errors import SystemdClientClosed, SystemdUnavailable
from .connection import Connection, Listener
from .errors import NoSuchUnitError, agent_error, is_connection_error
from .model import DEFAULT_PATTERNS, UnitEvent, UnitState, check_unit_name

_RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
_RECONNECT_DELAY_MAX = 5.0


async def connect(user: bool, *, liveness_interval: float = 1.0) -> SystemdClient:
    """Connect to the user's (``user=True``) or the system's systemd manager.

    Raises SystemdUnavailable with a hint when the bus or the manager cannot be reached.
    ``liveness_interval``: how often an idle watch or job wait checks that the connection
    still stands (a local check, no round trip).
    """
    connection = await Connection.open(user)
    return SystemdClient(connection, user=user, liveness_interval=liveness_interval)


class SystemdClient:
    """Implements model.UnitManager against a real systemd manager."""

    def __init__(self, connection: Connection, *, user: bool, liveness_interval: float) -> None:
        self._connection = connection
        self._user = user
        self.liveness_interval = liveness_interval
        self._lock = asyncio.Lock()
        self._closed = False

    async def start(self, unit: str, *, wait: bool = True) -> str:
        return await self._job("start", unit, wait)

    async def stop(self, unit: str, *, wait: bool = True) -> str:
        return await self._job("stop", unit, wait)

    async def restart(self, unit: str, *, wait: bool = True) -> str:
        return await self._job("restart", unit, wait)

    async def reset_failed(self, unit: str) -> None:
        check_unit_name(unit)
        connection = await self._live_connection()
        with self._translated("reset-failed", unit):
            try:
                await connection.manager.reset_failed_unit(unit)
            except NoSuchUnitError:
                pass  # not loaded, so not failed

    async def reload(self) -> None:
        connection = await self._live_connection()
        with self._translated("daemon-reload"):
            await connection.manager.reload()  # systemd replies once the reload is done

    async def get_state(self, unit: str) -> UnitState:
        check_unit_name(unit)
        connection = await self._live_connection()
        with self._translated("reading the state of", unit):
            return await connection.state(unit)

    async def list_units(self, patterns: Sequence[str] = DEFAULT_PATTERNS) -> list[UnitState]:
        connection = await self._live_connection()
        with self._translated(f"listing units {' '.join(patterns)}"):
            return await connection.states(patterns)

    def watch(self, patterns: Sequence[str] = DEFAULT_PATTERNS) -> UnitWatch:
        return UnitWatch(self, patterns)

    async def close(self) -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                self._connection.close()  # wakes listeners; watches then end

    def _drop_connection_for_tests(self) -> None:
        """Cut the bus socket under sd-bus, as a dying bus daemon would. sd-bus sees the
        stream end; everything above must notice and recover on its own."""
        with socket.socket(fileno=os.dup(self._connection.bus.get_fd())) as sock:
            sock.shutdown(socket.SHUT_RDWR)

    async def _job(self, action: str, unit: str, wait: bool) -> str:
        check_unit_name(unit)
        connection = await self._live_connection()
        method = getattr(connection.manager, f"{action}_unit")
        # Listen before the call: JobRemoved may follow the reply at once.
        listener = connection.listen()
        try:
            with self._translated(action, unit):
                try:
                    job = await method(unit, "replace")
                except NoSuchUnitError:
                    if action == "stop":
                        return "done"  # not loaded: nothing runs that could be stopped
                    raise
            if not wait:
                return "queued"
            while (signal := await listener.next(self.liveness_interval)) is not None:
                if signal.kind == "job" and signal.job == job:
                    return signal.result
        finally:
            listener.close()
        raise SystemdUnavailable(
            f"{action} {unit}: lost the connection to systemd while waiting for its job",
            hint="the job may still run; the unit's state tells how it ended",
        )

    async def _live_connection(self) -> Connection:
        """The connection, re-opened first if it was lost."""
        async with self._lock:
            if self._closed:
                raise SystemdClientClosed("the systemd client is closed")
            if not self._connection.alive:
                self._connection.close()
                self._connection = await Connection.open(self._user)
            return self._connection

    @contextmanager
    def _translated(self, action: str, unit: str | None = None) -> Iterator[None]:
        try:
            yield
        except SdBusBaseError as error:
            raise agent_error(error, action=action, unit=unit, user=self._user) from None


class UnitWatch:
    """UnitEvents for the units matching ``patterns`` (see model.UnitManager.watch)."""

    def __init__(self, client: SystemdClient, patterns: Sequence[str]) -> None:
        self._client = client
        self._patterns = tuple(patterns)
        connection = client._connection
        # Listen now, not at the first __anext__: what happens right after watch() counts.
        self._listener: Listener | None = connection.listen() if connection.alive and not client._closed else None
        self._events = self._run()

    def __aiter__(self) -> UnitWatch:
        return self

    async def __anext__(self) -> UnitEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()
        self._drop_listener()  # the generator's own cleanup never runs if it never started

    def _matches(self, unit: str) -> bool:
        return any(fnmatch.fnmatchcase(unit, pattern) for pattern in self._patterns)

    def _drop_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def _run(self) -> AsyncIterator[UnitEvent]:
        last: dict[str, UnitState] = {}  # to skip "changed" events that change nothing we show
        try:
            while True:
                if self._listener is None:
                    states = await self._reconnect()
                    if states is None:
                        return
                    for state in states:
                        last[state.name] = state
                        yield UnitEvent("resync", state.name, state)
                    continue
                listener = self._listener
                signal = await listener.next(self._client.liveness_interval)
                if signal is None:
                    self._drop_listener()
                    continue
                if not self._matches(signal.unit):
                    continue
                try:
                    state = await listener.connection.state(signal.unit)
                except SdBusBaseError as error:
                    self._raise_unless_lost(error, listener.connection, signal.unit)
                    self._drop_listener()
                    continue
                if signal.kind == "job":
                    yield UnitEvent("job", signal.unit, state, signal.result)
                elif state != last.get(signal.unit):
                    yield UnitEvent("changed", signal.unit, state)
                last[signal.unit] = state
        finally:
            self._drop_listener()

    async def _reconnect(self) -> list[UnitState] | None:
        """Wait until systemd answers again; listen, then list the matching units.
        None when the client was closed."""
        for delay in itertools.chain(_RECONNECT_DELAYS, itertools.repeat(_RECONNECT_DELAY_MAX)):
            try:
                connection = await self._client._live_connection()
            except SystemdClientClosed:
                return None
            except SystemdUnavailable:
                await asyncio.sleep(delay)
                continue
            self._listener = connection.listen()  # before listing: nothing falls in between
            try:
                return await connection.states(self._patterns)
            except SdBusBaseError as error:
                self._raise_unless_lost(error, connection, None)
                self._drop_listener()
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _raise_unless_lost(self, error: SdBusBaseError, connection: Connection, unit: str | None) -> None:
        if connection.alive and not is_connection_error(error):
            raise agent_error(error, action="watching", unit=unit, user=self._client._user) from None
