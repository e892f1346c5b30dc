"""The fake's own test helpers; its systemd behaviour is in tests/systemd's contract tests."""

from __future__ import annotations

import asyncio

import pytest
from fakes.unit_manager import FakeUnit, FakeUnitManager
from vllm_agent.errors import SystemdUnavailable
from vllm_agent.systemd import CLD_EXITED


async def test_an_unreachable_manager_refuses_calls() -> None:
    fake = FakeUnitManager()
    fake.define("a.service")
    fake.set_reachable(False)

    with pytest.raises(SystemdUnavailable):
        await fake.start("a.service")


async def test_a_watch_waits_out_an_outage_then_resyncs() -> None:
    fake = FakeUnitManager()
    fake.define("a.service", FakeUnit(restart_always=True))
    await fake.start("a.service")
    events = fake.watch(["a.service"])
    fake.set_reachable(False)
    fake.crash("a.service")
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    fake.set_reachable(True)

    event = await asyncio.wait_for(waiting, 5)
    assert event.kind == "resync" and event.state.n_restarts == 1
    await events.aclose()


async def test_a_clean_exit_without_restart_leaves_the_unit_inactive() -> None:
    fake = FakeUnitManager()
    fake.define("a.service")
    await fake.start("a.service")

    fake.crash("a.service", status=0, code=CLD_EXITED)

    state = await fake.get_state("a.service")
    assert (state.active_state, state.result, state.main_pid) == ("inactive", "success", 0)


async def test_calls_are_recorded_in_order() -> None:
    fake = FakeUnitManager()
    fake.define("a.service")

    await fake.start("a.service")
    await fake.stop("a.service")
    await fake.reload()

    assert fake.calls == [("start", "a.service"), ("stop", "a.service"), ("daemon-reload", "")]
