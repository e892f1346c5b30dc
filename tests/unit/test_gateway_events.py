"""The daemon pushes its deployment view to the gateway (GET /v1/events) as units change:
the real Daemon against the fake unit manager, followed by the gateway's own reader."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vllm_agent.daemon.main import Daemon
from vllm_agent.gateway.live import follow
from vllm_agent.testing.unit_manager import FakeUnit, FakeUnitManager
from vllm_agent.unit.notify import Notifier


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vag-", dir="/tmp"))  # Unix socket paths stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_the_gateway_sees_a_deployment_become_ready_and_leave_ready_as_it_happens(
    tmp_path: Path, short_dir: Path
) -> None:
    config_dir = tmp_path / "conf"
    (config_dir / "models.d").mkdir(parents=True)
    (config_dir / "agent.toml").write_text(
        f'unit_dir = "{tmp_path / "units"}"\nstate_dir = "{tmp_path / "state"}"\nsocket = "{short_dir / "a.sock"}"\n'
        "port_range = [23000, 23100]\n"
    )
    (config_dir / "models.d" / "one.toml").write_text('model = "org/m"\nport = 23001\naliases = ["fast"]\n')
    units = FakeUnitManager()
    units.define("vllm@one.service", FakeUnit(type="notify", restart="always"))
    daemon = Daemon(config_dir, True, units, notifier=Notifier(""))
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    views: list[list[dict[str, Any]]] = []
    connected = asyncio.Event()
    following = asyncio.create_task(follow(short_dir / "a.sock", views.append, connected))

    async def state_becomes(state: str) -> dict[str, Any]:
        for _ in range(500):
            if views and views[-1][0]["state"] == state:
                return views[-1][0]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no view with state {state!r}; got {[v[0]['state'] for v in views]}")

    try:
        await asyncio.wait_for(connected.wait(), 10)
        starting = await state_becomes("starting")
        assert (starting["served"], starting["aliases"], starting["port"]) == ("one", ["fast"], 23001)
        units.ready("vllm@one.service")
        await state_becomes("ready")
        units.crash("vllm@one.service")
        after = await state_becomes("starting")  # systemd restarts it: not routable meanwhile
        assert after["started_at"] > 0
        sent = len(views)
        await asyncio.sleep(0.3)
        assert len(views) == sent, "an unchanged view is not sent again"
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        stop.set()
        assert await asyncio.wait_for(running, 10) == 0
