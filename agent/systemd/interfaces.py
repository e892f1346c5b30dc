"""systemd's D-Bus interfaces, as far as the agent uses them: declarations only.

The members the agent needs, as ``python -m sdbus gen-from-connection`` would write them (it
needs jinja2, so they were written by hand); tests/systemd/test_systemd_client.py checks every
name and signature against systemd's own introspection. D-Bus names are given explicitly so
that renaming a Python attribute never changes what goes over the bus.
"""

from __future__ import annotations

from sdbus import (
    DbusInterfaceCommonAsync,
    dbus_method_async,
    dbus_property_async,
    dbus_signal_async,
)

SYSTEMD_BUS_NAME = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit"

# One row of ListUnitsByPatterns: name, description, load state, active state, sub state,
# following, unit path, job id, job type, job path.
UnitRow = tuple[str, str, str, str, str, str, str, int, str, str]


class ManagerInterface(DbusInterfaceCommonAsync, interface_name="org.freedesktop.systemd1.Manager"):
    @dbus_method_async("ss", "o", method_name="StartUnit")
    async def start_unit(self, name: str, mode: str) -> str:
        raise NotImplementedError

    @dbus_method_async("ss", "o", method_name="StopUnit")
    async def stop_unit(self, name: str, mode: str) -> str:
        raise NotImplementedError

    @dbus_method_async("ss", "o", method_name="RestartUnit")
    async def restart_unit(self, name: str, mode: str) -> str:
        raise NotImplementedError

    @dbus_method_async("s", method_name="ResetFailedUnit")
    async def reset_failed_unit(self, name: str) -> None:
        raise NotImplementedError

    @dbus_method_async(method_name="Reload")
    async def reload(self) -> None:
        raise NotImplementedError

    @dbus_method_async("s", "o", method_name="LoadUnit")
    async def load_unit(self, name: str) -> str:
        raise NotImplementedError

    @dbus_method_async("s", "o", method_name="GetUnit")
    async def get_unit(self, name: str) -> str:
        raise NotImplementedError

    @dbus_method_async("asas", "a(ssssssouso)", method_name="ListUnitsByPatterns")
    async def list_units_by_patterns(self, states: list[str], patterns: list[str]) -> list[UnitRow]:
        raise NotImplementedError

    @dbus_method_async(method_name="Subscribe")
    async def subscribe(self) -> None:
        raise NotImplementedError

    @dbus_method_async(method_name="Unsubscribe")
    async def unsubscribe(self) -> None:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Version")
    def version(self) -> str:
        raise NotImplementedError

    @dbus_signal_async("uoss", signal_name="JobRemoved")
    def job_removed(self) -> tuple[int, str, str, str]:
        raise NotImplementedError

    @dbus_signal_async("so", signal_name="UnitNew")
    def unit_new(self) -> tuple[str, str]:
        raise NotImplementedError

    @dbus_signal_async("so", signal_name="UnitRemoved")
    def unit_removed(self) -> tuple[str, str]:
        raise NotImplementedError


class UnitInterface(DbusInterfaceCommonAsync, interface_name="org.freedesktop.systemd1.Unit"):
    @dbus_property_async("s", property_name="Id")
    def id(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="LoadState")
    def load_state(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="ActiveState")
    def active_state(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="SubState")
    def sub_state(self) -> str:
        raise NotImplementedError

    @dbus_property_async("ay", property_name="InvocationID")
    def invocation_id(self) -> bytes:
        raise NotImplementedError

    @dbus_property_async("t", property_name="ActiveEnterTimestamp")
    def active_enter_timestamp(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="InactiveEnterTimestamp")
    def inactive_enter_timestamp(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="StateChangeTimestamp")
    def state_change_timestamp(self) -> int:
        raise NotImplementedError

    @dbus_property_async("s", property_name="FragmentPath")
    def fragment_path(self) -> str:
        raise NotImplementedError

    @dbus_property_async("as", property_name="DropInPaths")
    def drop_in_paths(self) -> list[str]:
        raise NotImplementedError


class ServiceInterface(DbusInterfaceCommonAsync, interface_name="org.freedesktop.systemd1.Service"):
    @dbus_property_async("s", property_name="Result")
    def result(self) -> str:
        raise NotImplementedError

    @dbus_property_async("u", property_name="NRestarts")
    def n_restarts(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u", property_name="MainPID")
    def main_pid(self) -> int:
        raise NotImplementedError

    @dbus_property_async("i", property_name="ExecMainStatus")
    def exec_main_status(self) -> int:
        raise NotImplementedError

    @dbus_property_async("i", property_name="ExecMainCode")
    def exec_main_code(self) -> int:
        raise NotImplementedError

    @dbus_property_async("s", property_name="StatusText")
    def status_text(self) -> str:
        raise NotImplementedError

    @dbus_property_async("t", property_name="ExecMainStartTimestamp")
    def exec_main_start_timestamp(self) -> int:
        raise NotImplementedError


class ServiceUnitInterface(UnitInterface, ServiceInterface):
    """A ``.service`` unit's object: both interfaces, read together with GetAll."""
