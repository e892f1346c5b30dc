"""One contract for every UnitManager.

The same tests run against the in-memory fake (agent/testing/unit_manager.py) and the real client
driving a private systemd user manager, so the fake can stand in for systemd wherever these
tests look.
"""

from __future__ import annotations

import asyncio

import pytest
from unit_backends import EVENT_TIMEOUT, Backend, next_event
from vllm_agent.errors import AgentError, InvalidUnitName, SystemdClientClosed, UnitNotFound
from vllm_agent.systemd import CLD_EXITED


async def test_start_runs_the_unit_and_reports_done(backend: Backend) -> None:
    unit = backend.define("sleeps")

    assert await backend.manager.start(unit) == "done"

    state = await backend.manager.get_state(unit)
    assert (state.load_state, state.active_state, state.sub_state) == ("loaded", "active", "running")
    assert state.main_pid > 0 and backend.process_exists(state.main_pid)
    assert len(state.invocation_id) == 32 and int(state.invocation_id, 16)
    assert state.result == "success" and state.n_restarts == 0
    assert state.active_enter_timestamp > 0


async def test_stop_leaves_the_unit_inactive_with_no_process(backend: Backend) -> None:
    unit = backend.define("sleeps")
    await backend.manager.start(unit)
    pid = (await backend.manager.get_state(unit)).main_pid

    assert await backend.manager.stop(unit) == "done"

    state = await backend.manager.get_state(unit)
    assert (state.active_state, state.sub_state, state.main_pid) == ("inactive", "dead", 0)
    assert state.invocation_id == ""
    assert not backend.process_exists(pid)


async def test_failing_start_reports_failed_with_the_exit_status(backend: Backend) -> None:
    unit = backend.define("fails")

    assert await backend.manager.start(unit) == "failed"

    state = await backend.manager.get_state(unit)
    assert (state.active_state, state.sub_state, state.result) == ("failed", "failed", "exit-code")
    assert (state.exec_main_code, state.exec_main_status) == (CLD_EXITED, 3)
    assert state.main_pid == 0


async def test_reset_failed_returns_a_failed_unit_to_inactive(backend: Backend) -> None:
    unit = backend.define("fails")
    await backend.manager.start(unit)

    await backend.manager.reset_failed(unit)

    state = await backend.manager.get_state(unit)
    assert (state.active_state, state.sub_state, state.result) == ("inactive", "dead", "success")


async def test_stopping_a_failed_unit_leaves_it_failed_until_reset(backend: Backend) -> None:
    unit = backend.define("fails")
    await backend.manager.start(unit)

    assert await backend.manager.stop(unit) == "done"

    state = await backend.manager.get_state(unit)
    assert (state.active_state, state.result, state.exec_main_status) == ("failed", "exit-code", 3)


async def test_reset_failed_accepts_units_that_are_not_failed_or_not_loaded(backend: Backend) -> None:
    running = backend.define("sleeps")
    await backend.manager.start(running)

    await backend.manager.reset_failed(running)
    await backend.manager.reset_failed(f"{backend.prefix}-never-loaded.service")

    assert (await backend.manager.get_state(running)).active_state == "active"


async def test_restart_runs_a_new_invocation(backend: Backend) -> None:
    unit = backend.define("sleeps")
    await backend.manager.start(unit)
    before = await backend.manager.get_state(unit)

    assert await backend.manager.restart(unit) == "done"

    after = await backend.manager.get_state(unit)
    assert after.active_state == "active"
    assert after.invocation_id not in ("", before.invocation_id)
    assert after.main_pid not in (0, before.main_pid)


async def test_start_without_waiting_returns_queued_and_the_unit_comes_up(backend: Backend) -> None:
    unit = backend.define("sleeps")

    assert await backend.manager.start(unit, wait=False) == "queued"

    async with asyncio.timeout(EVENT_TIMEOUT):
        while (await backend.manager.get_state(unit)).active_state != "active":
            await asyncio.sleep(0.02)


async def test_an_unknown_unit_reads_as_not_found(backend: Backend) -> None:
    unit = f"{backend.prefix}-missing.service"

    state = await backend.manager.get_state(unit)

    assert (state.load_state, state.active_state, state.main_pid) == ("not-found", "inactive", 0)
    assert not state.exists


async def test_starting_an_unknown_unit_names_it(backend: Backend) -> None:
    unit = f"{backend.prefix}-missing.service"

    with pytest.raises(UnitNotFound, match=unit) as raised:
        await backend.manager.start(unit)

    assert "daemon-reload" in (raised.value.hint or "")


async def test_stopping_a_unit_that_is_not_loaded_is_done(backend: Backend) -> None:
    assert await backend.manager.stop(f"{backend.prefix}-missing.service") == "done"


@pytest.mark.parametrize("method", ["start", "stop", "restart", "reset_failed", "get_state"])
async def test_an_invalid_unit_name_is_an_agent_error(backend: Backend, method: str) -> None:
    with pytest.raises(InvalidUnitName) as raised:
        await getattr(backend.manager, method)("spaces in.service")

    assert isinstance(raised.value, AgentError) and raised.value.hint


async def test_list_units_returns_the_active_units_matching_the_patterns(backend: Backend) -> None:
    sleepers = {backend.define("sleeps"), backend.define("sleeps")}
    other = backend.define("restarts")
    for unit in (*sleepers, other):
        await backend.manager.start(unit)

    listed = await backend.manager.list_units([f"{backend.prefix}-sleeps-*"])
    both = await backend.manager.list_units([f"{backend.prefix}-sleeps-*", f"{backend.prefix}-restarts-*"])

    assert {state.name for state in listed} == sleepers
    assert all(state.active_state == "active" and state.main_pid for state in listed)
    assert {state.name for state in both} == sleepers | {other}


async def test_daemon_reload_keeps_units_and_watches_working(backend: Backend) -> None:
    unit = backend.define("sleeps")
    events = backend.manager.watch([unit])

    await backend.manager.reload()
    await backend.manager.start(unit)

    job = await next_event(events, lambda e: e.kind == "job")
    assert job.job_result == "done"
    await events.aclose()


async def test_watch_sees_a_start_as_a_change_and_a_finished_job(backend: Backend) -> None:
    unit = backend.define("sleeps")
    events = backend.manager.watch([f"{backend.prefix}-*"])

    await backend.manager.start(unit)

    changed = await next_event(events, lambda e: e.kind == "changed" and e.state.active_state == "active")
    job = await next_event(events, lambda e: e.kind == "job")
    assert changed.unit == job.unit == unit
    assert changed.state.main_pid > 0
    assert job.job_result == "done" and job.state.active_state == "active"
    await events.aclose()


async def test_watch_sees_a_failed_start_job(backend: Backend) -> None:
    unit = backend.define("fails")
    events = backend.manager.watch([unit])

    await backend.manager.start(unit)

    job = await next_event(events, lambda e: e.kind == "job")
    assert job.job_result == "failed"
    assert job.state.active_state == "failed" and job.state.exec_main_status == 3
    await events.aclose()


async def test_watch_ignores_units_that_do_not_match(backend: Backend) -> None:
    watched, ignored = backend.define("sleeps"), backend.define("restarts")
    events = backend.manager.watch([f"{backend.prefix}-sleeps-*"])

    await backend.manager.start(ignored)
    await backend.manager.start(watched)

    job = await next_event(events, lambda e: e.kind == "job")
    assert job.unit == watched
    await events.aclose()


async def test_watch_sees_a_crash_and_the_automatic_restart(backend: Backend) -> None:
    unit = backend.define("restarts")
    await backend.manager.start(unit)
    before = await backend.manager.get_state(unit)
    events = backend.manager.watch([unit])

    await backend.crash(unit)

    restarted = await next_event(
        events, lambda e: e.state is not None and e.state.n_restarts == 1 and e.state.sub_state == "running"
    )
    assert restarted.kind in ("changed", "job")
    assert restarted.state.main_pid not in (0, before.main_pid)
    assert restarted.state.invocation_id != before.invocation_id
    await events.aclose()


async def test_watch_resyncs_after_a_lost_connection_showing_what_happened_meanwhile(backend: Backend) -> None:
    unit = backend.define("restarts")
    events = backend.manager.watch([unit])
    await backend.manager.start(unit)
    await next_event(events, lambda e: e.kind == "job")

    backend.drop_connection()
    await backend.crash(unit)  # while the watch is disconnected

    resync = await next_event(events, lambda e: e.kind == "resync")
    assert resync.unit == unit
    assert resync.state.n_restarts == 1 and resync.state.active_state == "active"

    await backend.manager.stop(unit)  # the watch is connected again
    stopped = await next_event(events, lambda e: e.kind == "job")
    assert stopped.state.active_state == "inactive"
    await events.aclose()


async def test_calls_after_a_lost_connection_reconnect(backend: Backend) -> None:
    unit = backend.define("sleeps")

    backend.drop_connection()
    await asyncio.sleep(0.2)  # the client reads the end of the stream; a call racing it fails

    assert await backend.manager.start(unit) == "done"


async def test_close_ends_watches_and_refuses_further_calls(backend: Backend) -> None:
    unit = backend.define("sleeps")
    events = backend.manager.watch([unit])

    await backend.manager.close()

    async with asyncio.timeout(EVENT_TIMEOUT):
        assert [event async for event in events] == []
    with pytest.raises(SystemdClientClosed):
        await backend.manager.get_state(unit)
