"""What only the real client can show: reaching (or not reaching) a bus, living through a
restart of the bus daemon itself, and declarations that match systemd's own introspection.
Everything else is in test_unit_manager_contract.py."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest
from harness import UserManager
from vllm_agent.errors import SystemdUnavailable
from vllm_agent.systemd import connect
from vllm_agent.systemd.interfaces import (
    MANAGER_PATH,
    SYSTEMD_BUS_NAME,
    UNIT_PATH_PREFIX,
    ManagerInterface,
    ServiceInterface,
    UnitInterface,
)

_units = itertools.count()


async def test_connecting_without_a_user_bus_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)

    with pytest.raises(SystemdUnavailable) as raised:
        await connect(user=True)

    assert "not reachable" in raised.value.message
    assert f"XDG_RUNTIME_DIR={tmp_path}" in (raised.value.hint or "")


async def test_a_watch_lives_through_a_restart_of_the_bus_daemon(user_manager: UserManager) -> None:
    unit = f"busrestart{next(_units)}.service"
    user_manager.write_unit(unit, "[Service]\nExecStart=/bin/sleep infinity\n")
    user_manager.daemon_reload()
    client = await connect(user=True, liveness_interval=0.1)
    events = client.watch([unit])
    try:
        user_manager.systemctl("restart", "dbus.service")
        # systemd runs the unit while the watch has no connection; the resync must show it.
        user_manager.systemctl("start", unit)

        async with asyncio.timeout(20):
            async for event in events:
                if event.kind == "resync" and event.unit == unit:
                    break
        assert event.state is not None and event.state.active_state == "active"
        assert await client.stop(unit) == "done"
    finally:
        await events.aclose()
        await client.close()
        user_manager.systemctl("stop", unit)


@pytest.mark.parametrize(
    ("interface", "path"),
    [
        (ManagerInterface, MANAGER_PATH),
        (UnitInterface, f"{UNIT_PATH_PREFIX}/dbus_2eservice"),
        (ServiceInterface, f"{UNIT_PATH_PREFIX}/dbus_2eservice"),
    ],
)
def test_declared_interfaces_match_what_systemd_introspects(
    user_manager: UserManager, interface: type, path: str
) -> None:
    """Hand-trimmed declarations must name and type every member as systemd does."""
    introspected = subprocess.run(
        ["busctl", "--user", "introspect", "--xml-interface", SYSTEMD_BUS_NAME, path],
        env=user_manager.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    systemd = _members(ElementTree.fromstring(introspected), _interface_name(interface))

    declared = {(kind, member_name): signature for kind, member_name, signature in _declared(interface)}

    assert declared, f"no members declared on {interface.__name__}"
    assert {key: systemd.get(key) for key in declared} == declared


def _interface_name(interface: type) -> str:
    return next(member.interface_name for member in vars(interface).values() if hasattr(member, "interface_name"))


def _declared(interface: type) -> list[tuple[str, str, str]]:
    found = []
    for member in vars(interface).values():
        if hasattr(member, "method_name"):
            found.append(("method", member.method_name, f"{member.input_signature}->{member.result_signature}"))
        elif hasattr(member, "property_name"):
            found.append(("property", member.property_name, member.property_signature))
        elif hasattr(member, "signal_name"):
            found.append(("signal", member.signal_name, member.signal_signature))
    return found


def _members(node: ElementTree.Element, interface_name: str) -> dict[tuple[str, str], str]:
    (interface,) = [i for i in node.iter("interface") if i.get("name") == interface_name]
    found = {}
    for element in interface:
        args = element.findall("arg")
        if element.tag == "method":
            inputs = "".join(a.get("type", "") for a in args if a.get("direction", "in") == "in")
            outputs = "".join(a.get("type", "") for a in args if a.get("direction") == "out")
            found[("method", element.get("name", ""))] = f"{inputs}->{outputs}"
        elif element.tag == "property":
            found[("property", element.get("name", ""))] = element.get("type", "")
        elif element.tag == "signal":
            found[("signal", element.get("name", ""))] = "".join(a.get("type", "") for a in args)
    return found
