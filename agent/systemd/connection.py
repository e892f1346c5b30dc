"""One D-Bus connection to a systemd manager, subscribed to its signals.

The connection matches JobRemoved and every unit's PropertiesChanged once, calls Subscribe()
(without which systemd broadcasts neither), and fans the signals out to listeners. A listener
created before a call sees every signal that follows it, which is how a job is awaited without
a race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sdbus
from sdbus import SdBusBaseError

from .errors import agent_error
from .interfaces import (
    MANAGER_PATH,
    SYSTEMD_BUS_NAME,
    UNIT_PATH_PREFIX,
    ManagerInterface,
    ServiceUnitInterface,
    UnitInterface,
)
from .model import UnitState

_MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
_PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"


@dataclass(frozen=True)
class Signal:
    kind: Literal["changed", "job"]
    unit: str
    job: str = ""  # job object path, for "job"
    result: str = ""  # job result, for "job"


class Listener:
    """The signals of one connection from the moment the listener was created."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._queue: asyncio.Queue[Signal | None] = asyncio.Queue()
        connection._listeners.add(self._queue)

    async def next(self, liveness_interval: float) -> Signal | None:
        """The next signal, or None once the connection is gone.

        sd-bus offers no callback for a lost connection (the local Disconnected signal cannot be
        matched through sdbus), so while idle, look every ``liveness_interval`` seconds whether
        the connection still stands; that look is local and costs no round trip.
        """
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation, and a
            # daemon stopping would then wait on this listener forever.
            try:
                async with asyncio.timeout(liveness_interval):
                    return await self._queue.get()
            except TimeoutError:
                if not self.connection.alive:
                    return None

    def close(self) -> None:
        self.connection._listeners.discard(self._queue)


class Connection:
    def __init__(self, bus: sdbus.SdBus) -> None:
        self.bus: sdbus.SdBus | None = bus
        self.manager: Any = ManagerInterface.new_proxy(SYSTEMD_BUS_NAME, MANAGER_PATH, bus)
        self._listeners: set[asyncio.Queue[Signal | None]] = set()
        self._slots: list[Any] = []

    @classmethod
    async def open(cls, user: bool) -> Connection:
        """Connect to the user's or the system's manager; SystemdUnavailable if unreachable.

        sd_bus_open_user() follows libsystemd: $DBUS_SESSION_BUS_ADDRESS, else
        $XDG_RUNTIME_DIR/bus. The bus is passed to every proxy; no default bus is set.
        """
        try:
            bus = sdbus.sd_bus_open_user() if user else sdbus.sd_bus_open_system()
        except SdBusBaseError as error:
            raise agent_error(error, action="connecting to systemd", user=user) from None
        connection = cls(bus)
        try:
            for path, interface, member in (
                (MANAGER_PATH, _MANAGER_INTERFACE, "JobRemoved"),
                (None, _PROPERTIES_INTERFACE, "PropertiesChanged"),
            ):
                slot = await bus.match_signal_async(SYSTEMD_BUS_NAME, path, interface, member, connection._dispatch)
                connection._slots.append(slot)
            await connection.manager.subscribe()
        except SdBusBaseError as error:
            connection.close()
            raise agent_error(error, action="subscribing to systemd", user=user) from None
        return connection

    def _dispatch(self, message: Any) -> None:
        if message.member == "JobRemoved":
            _job_id, job, unit, result = message.get_contents()
            signal = Signal("job", unit, job, result)
        else:
            unit = sdbus.decode_object_path(UNIT_PATH_PREFIX, message.path or "")
            if not unit:
                return  # the manager and jobs change properties too
            signal = Signal("changed", unit)
        for queue in self._listeners:
            queue.put_nowait(signal)

    @property
    def alive(self) -> bool:
        return self.bus is not None and _is_open(self.bus)

    def listen(self) -> Listener:
        return Listener(self)

    async def state(self, unit: str, path: str | None = None) -> UnitState:
        """The unit's properties, read with GetAll; LoadUnit first so inactive units work."""
        if path is None:
            path = await self.manager.load_unit(unit)
        interface = ServiceUnitInterface if unit.endswith(".service") else UnitInterface
        proxy = interface.new_proxy(SYSTEMD_BUS_NAME, path, self.bus)
        return unit_state(unit, await proxy.properties_get_all_dict(on_unknown_member="ignore"))

    async def states(self, patterns: Sequence[str]) -> list[UnitState]:
        rows = await self.manager.list_units_by_patterns([], list(patterns))
        # A not-found, inactive unit is only a ghost of a recent lookup (e.g. LoadUnit).
        wanted = [(row[0], row[6]) for row in rows if (row[2], row[3]) != ("not-found", "inactive")]
        return list(await asyncio.gather(*(self.state(name, path) for name, path in wanted)))

    def close(self) -> None:
        """Wake the listeners and let the bus go.

        Never sd_bus_close(): sdbus unregisters the bus's fd *number* from the event loop when
        the object is freed, so a live bus must keep its fd open until then (freeing it
        unregisters, then closes). A bus whose connection ended has had its fd closed by sd-bus
        already and its number may belong to someone else by the time it is freed: keep it.
        """
        for queue in self._listeners:
            queue.put_nowait(None)
        self._listeners.clear()
        for slot in self._slots:
            slot.close()
        self._slots.clear()
        bus, self.bus, self.manager = self.bus, None, None
        if bus is not None and not _is_open(bus):
            _ENDED_BUSES.append(bus)  # a small object and a timerfd per lost connection


# Buses whose connection ended; see Connection.close().
_ENDED_BUSES: list[sdbus.SdBus] = []


def _is_open(bus: sdbus.SdBus) -> bool:
    try:
        bus.get_fd()  # ENOTCONN once sd-bus has seen the connection end
    except SdBusBaseError:
        return False
    return True


def unit_state(unit: str, props: dict[str, Any]) -> UnitState:
    return UnitState(
        name=unit,
        load_state=props["load_state"],
        active_state=props["active_state"],
        sub_state=props["sub_state"],
        result=props.get("result", ""),
        n_restarts=props.get("n_restarts", 0),
        main_pid=props.get("main_pid", 0),
        exec_main_status=props.get("exec_main_status", 0),
        exec_main_code=props.get("exec_main_code", 0),
        invocation_id=bytes(props.get("invocation_id", b"")).hex(),
        status_text=props.get("status_text", ""),
        active_enter_timestamp=props.get("active_enter_timestamp", 0),
        state_change_timestamp=props.get("state_change_timestamp", 0),
    )
