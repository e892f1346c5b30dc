"""The contract, continued: what systemd does on its own, as a unit file tells it to.

Restart=, RestartPreventExitStatus=, the start limit, Type=notify readiness and the watchdog,
each run against the fake (agent/testing/unit_manager.py) and a real user manager, so code tested
against the fake meets the same behaviour from systemd 252.
"""

from __future__ import annotations

import asyncio
import signal

from unit_backends import EVENT_TIMEOUT, Backend, next_event, state_where
from vllm_agent.systemd import CLD_DUMPED, CLD_EXITED, CLD_KILLED, UnitState
from vllm_agent.testing.unit_manager import FakeUnit

CRASH_LOOP = FakeUnit(restart="always", exit_status=1, start_limit_burst=3, start_limit_interval_sec=60)


def failed(state: UnitState) -> bool:
    return state.active_state == "failed"


def inactive(state: UnitState) -> bool:
    return state.active_state == "inactive"


def running(state: UnitState) -> bool:
    return state.sub_state == "running"


def starting(state: UnitState) -> bool:
    return state.sub_state == "start" and state.main_pid > 0


# -- Restart= and RestartPreventExitStatus= ---------------------------------------------------


async def test_restart_on_failure_restarts_a_killed_process_but_not_one_ended_by_sigterm(backend: Backend) -> None:
    unit = backend.define("on-failure", FakeUnit(restart="on-failure"))
    await backend.manager.start(unit)
    first = await backend.manager.get_state(unit)

    await backend.crash(unit, signal.SIGKILL)
    restarted = await state_where(backend.manager, unit, running)
    await backend.crash(unit, signal.SIGTERM)  # a clean end, as systemd counts it
    ended = await state_where(backend.manager, unit, inactive)

    assert restarted.n_restarts == 1 and restarted.main_pid not in (0, first.main_pid)
    assert (ended.active_state, ended.result, ended.main_pid) == ("inactive", "success", 0)
    assert not backend.process_exists(restarted.main_pid)


async def test_an_exit_status_in_restart_prevent_exit_status_is_never_restarted(backend: Backend) -> None:
    policy = dict(restart="always", restart_prevent_exit_status=(78,), start_limit_burst=2, start_limit_interval_sec=60)
    prevented = backend.define("prevented", FakeUnit(exit_status=78, **policy))
    other = backend.define("other-status", FakeUnit(exit_status=77, **policy))

    await backend.manager.start(prevented)
    await backend.manager.start(other)

    stopped = await state_where(backend.manager, prevented, failed)
    assert (stopped.active_state, stopped.result) == ("failed", "exit-code")
    assert (stopped.exec_main_code, stopped.exec_main_status, stopped.n_restarts) == (CLD_EXITED, 78, 0)
    looped = await state_where(backend.manager, other, failed)  # Restart=always applies to 77
    assert (looped.active_state, looped.exec_main_status, looped.n_restarts) == ("failed", 77, 2)


# -- the start limit ----------------------------------------------------------------------------


async def test_the_start_limit_ends_a_crash_loop_after_burst_starts(backend: Backend) -> None:
    unit = backend.define("crash-loop", CRASH_LOOP)

    await backend.manager.start(unit)

    state = await state_where(backend.manager, unit, failed)
    # Three starts ran; the third restart was counted, then refused. The Result stays that of
    # the last crash: start-limit-hit shows only on a unit that had not failed already.
    assert (state.active_state, state.sub_state, state.main_pid) == ("failed", "failed", 0)
    assert (state.result, state.exec_main_status, state.n_restarts) == ("exit-code", 1, 3)


async def test_a_unit_at_its_start_limit_refuses_starts_until_reset_failed(backend: Backend) -> None:
    unit = backend.define("crash-loop", CRASH_LOOP)
    await backend.manager.start(unit)
    limited = await state_where(backend.manager, unit, failed)

    assert await backend.manager.start(unit) == "failed"
    refused = await backend.manager.get_state(unit)  # nothing ran
    assert (refused.active_state, refused.result, refused.n_restarts) == ("failed", "exit-code", 3)
    assert (refused.invocation_id, refused.main_pid) == (limited.invocation_id, 0)

    await backend.manager.reset_failed(unit)
    assert await backend.manager.start(unit) == "done"  # a new window: it runs (and loops) again
    assert (await backend.manager.get_state(unit)).invocation_id != limited.invocation_id


async def test_manual_restarts_count_towards_the_start_limit(backend: Backend) -> None:
    unit = backend.define("limited", FakeUnit(start_limit_burst=2, start_limit_interval_sec=60))
    await backend.manager.start(unit)
    assert await backend.manager.restart(unit) == "done"

    assert await backend.manager.restart(unit) == "failed"

    state = await backend.manager.get_state(unit)
    assert (state.active_state, state.result, state.main_pid) == ("failed", "start-limit-hit", 0)
    assert await backend.manager.start(unit) == "failed"


async def test_starts_separated_by_stops_do_not_add_up_when_nothing_references_the_unit(backend: Backend) -> None:
    # A stopped unit nothing references is unloaded, and its start count with it.
    unit = backend.define("limited", FakeUnit(start_limit_burst=2, start_limit_interval_sec=60))

    results = []
    for _ in range(3):
        results.append(await backend.manager.start(unit))
        await backend.manager.stop(unit)

    assert results == ["done", "done", "done"]


async def test_the_start_limit_lifts_when_its_interval_has_passed(backend: Backend) -> None:
    unit = backend.define("limited", FakeUnit(start_limit_burst=1, start_limit_interval_sec=1))
    await backend.manager.start(unit)
    assert await backend.manager.restart(unit) == "failed"

    async with asyncio.timeout(EVENT_TIMEOUT):
        while await backend.manager.start(unit) != "done":  # refused starts do not move the window
            await asyncio.sleep(0.1)

    assert (await backend.manager.get_state(unit)).active_state == "active"


# -- Type=notify ----------------------------------------------------------------------------------


async def test_a_notify_unit_stays_activating_until_it_reports_ready(backend: Backend) -> None:
    unit = backend.define("notify", FakeUnit(type="notify"))

    assert await backend.manager.start(unit, wait=False) == "queued"
    activating = await state_where(backend.manager, unit, starting)
    job = asyncio.ensure_future(backend.manager.start(unit))  # joins the start under way
    await asyncio.sleep(0)
    assert activating.active_state == "activating" and not job.done()

    await backend.ready(unit)

    assert await asyncio.wait_for(job, EVENT_TIMEOUT) == "done"
    state = await backend.manager.get_state(unit)
    assert (state.active_state, state.sub_state, state.main_pid) == ("active", "running", activating.main_pid)
    assert activating.active_enter_timestamp == 0 and state.active_enter_timestamp > 0


async def test_stopping_a_notify_unit_before_it_is_ready_cancels_its_start(backend: Backend) -> None:
    unit = backend.define("notify", FakeUnit(type="notify"))
    job = asyncio.ensure_future(backend.manager.start(unit))
    activating = await state_where(backend.manager, unit, starting)

    assert await backend.manager.stop(unit) == "done"

    assert await asyncio.wait_for(job, EVENT_TIMEOUT) == "canceled"
    assert (await backend.manager.get_state(unit)).active_state == "inactive"
    assert not backend.process_exists(activating.main_pid)


async def test_a_notify_unit_dying_before_ready_fails_its_start_while_systemd_restarts_it(backend: Backend) -> None:
    unit = backend.define("notify-restarts", FakeUnit(type="notify", restart="always", start_limit_interval_sec=0))
    events = backend.manager.watch([unit])
    job = asyncio.ensure_future(backend.manager.start(unit))
    first = await state_where(backend.manager, unit, starting)

    await backend.crash(unit)

    assert await asyncio.wait_for(job, EVENT_TIMEOUT) == "failed"
    again = await state_where(backend.manager, unit, lambda s: starting(s) and s.n_restarts == 1)
    assert again.main_pid != first.main_pid and again.invocation_id != first.invocation_id
    await backend.ready(unit)
    job = await next_event(events, lambda e: e.kind == "job" and e.job_result == "done")
    assert job.state.active_state == "active"
    await events.aclose()


async def test_a_notify_unit_exiting_0_before_ready_fails_with_result_protocol(backend: Backend) -> None:
    unit = backend.define("notify-exits", FakeUnit(type="notify", exit_status=0))

    assert await backend.manager.start(unit) == "failed"

    state = await backend.manager.get_state(unit)
    assert (state.active_state, state.result, state.exec_main_status) == ("failed", "protocol", 0)


# -- the watchdog ------------------------------------------------------------------------------


async def test_a_watchdog_timeout_kills_the_unit_with_result_watchdog(backend: Backend) -> None:
    unit = backend.define("watchdog", FakeUnit(watchdog_sec=1))  # its process never pings
    await backend.manager.start(unit)
    pid = (await backend.manager.get_state(unit)).main_pid

    await backend.watchdog_timeout(unit)

    state = await state_where(backend.manager, unit, failed)
    assert (state.active_state, state.result, state.main_pid) == ("failed", "watchdog", 0)
    assert state.exec_main_status == signal.SIGABRT and state.exec_main_code in (CLD_KILLED, CLD_DUMPED)
    assert not backend.process_exists(pid)


async def test_watchdog_trigger_is_a_failure_that_restart_on_failure_restarts(backend: Backend) -> None:
    unit = backend.define("watchdog-trigger", FakeUnit(restart="on-failure"))  # no WatchdogSec needed
    await backend.manager.start(unit)
    before = await backend.manager.get_state(unit)

    await backend.watchdog_trigger(unit)

    state = await state_where(backend.manager, unit, running)
    assert state.n_restarts == 1 and state.main_pid not in (0, before.main_pid)
    assert not backend.process_exists(before.main_pid)
