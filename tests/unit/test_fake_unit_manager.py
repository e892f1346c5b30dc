"""The fake's own test helpers; its systemd behaviour is in tests/systemd's contract tests."""

from __future__ import annotations

import asyncio

import pytest
from vllm_agent.errors import SystemdUnavailable
from vllm_agent.systemd import CLD_EXITED
from vllm_agent.testing.unit_manager import FakeUnit, FakeUnitManager


async def test_an_unreachable_manager_refuses_calls() -> None:
    fake = FakeUnitManager()
    fake.define("a.service")
    fake.set_reachable(False)

    with pytest.raises(SystemdUnavailable):
        await fake.start("a.service")


async def test_a_watch_waits_out_an_outage_then_resyncs() -> None:
    fake = FakeUnitManager()
    fake.define("a.service", FakeUnit(restart="always"))
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


async def test_the_start_limit_window_follows_the_injected_clock() -> None:
    now = [100.0]
    fake = FakeUnitManager(clock=lambda: now[0])
    fake.define("a.service", FakeUnit(start_limit_burst=1, start_limit_interval_sec=10))
    await fake.start("a.service")
    assert await fake.restart("a.service") == "failed"

    now[0] += 10.5

    assert await fake.start("a.service") == "done"


def test_a_unit_that_would_restart_forever_is_refused_at_define() -> None:
    fake = FakeUnitManager()

    with pytest.raises(AssertionError, match="restart forever"):
        fake.define("a.service", FakeUnit(restart="always", exit_status=1, start_limit_interval_sec=0))
    with pytest.raises(AssertionError, match="restart forever"):
        fake.define("b.service", FakeUnit(type="notify", restart="on-failure", exit_status=0, start_limit_burst=0))
    fake.define("c.service", FakeUnit(restart="on-failure", exit_status=0, start_limit_interval_sec=0))


async def test_helpers_refuse_what_systemd_would_not_do() -> None:
    fake = FakeUnitManager()
    fake.define("simple.service", FakeUnit(watchdog_sec=1))
    fake.define("notify.service", FakeUnit(type="notify", watchdog_sec=1))
    fake.define("no-watchdog.service")
    for unit in fake.units:
        await fake.start(unit, wait=False)

    with pytest.raises(AssertionError, match="READY=1"):
        fake.ready("simple.service")  # READY=1 only means something to a notify unit starting
    with pytest.raises(AssertionError, match="not armed"):
        fake.watchdog_timeout("notify.service")  # armed once it is ready
    with pytest.raises(AssertionError, match="no WatchdogSec"):
        fake.watchdog_timeout("no-watchdog.service")
