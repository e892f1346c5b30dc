"""Reusable contract suites: what the agent relies on from each kind of provider.

Each check raises AssertionError with a sentence saying which rule was broken. The async ones
are awaited from an async test (pytest-asyncio). Pass a real instance of your provider; the
checks call it the way the agent does, including against an engine that is not there.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import AgentError, GpuError
from ..plugin_api import (
    AgentEvent,
    CheckResult,
    Deployment,
    EngineTarget,
    GpuBackend,
    GpuDevice,
    GpuSnapshot,
    HealthStrategy,
    ModelSource,
    ResolvedModel,
    TestContext,
    TestOutcome,
    TestRunner,
    TestSpec,
)

EVENT_KINDS = ("starting", "ready", "unhealthy", "restarted", "failed", "crash-loop", "stopped")


def unreachable_target(name: str = "m") -> EngineTarget:
    """An EngineTarget on a loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return EngineTarget(deployment=name, url=f"http://127.0.0.1:{port}", served_model_name=name)


def _named(provider: Any, protocol: type) -> None:
    name = getattr(provider, "name", None)
    assert isinstance(name, str) and name, f"{provider!r} needs a non-empty str 'name' (configuration selects by it)"
    missing = sorted(member for member in protocol_members(protocol) if not hasattr(provider, member))
    assert not missing, f"{provider!r} lacks {', '.join(missing)} of {protocol.__name__}"


def protocol_members(protocol: type) -> set[str]:
    """The public attributes and methods a Protocol asks for (``isinstance`` would also demand
    markers such as ``__test__``)."""
    names = set(getattr(protocol, "__annotations__", {})) | {n for n, v in vars(protocol).items() if callable(v)}
    return {name for name in names if not name.startswith("_")}


def _agent_error_only(err: BaseException, where: str) -> None:
    assert isinstance(err, AgentError), (
        f"{where} raised {err!r}: raise an AgentError subclass with a hint (the agent reports any other "
        "exception as a bug in your plugin)"
    )
    assert err.message, f"{where} raised an AgentError without a message"


async def check_model_source(
    source: ModelSource, deployment: Deployment | None = None, *, missing: Deployment | None = None
) -> ResolvedModel | None:
    """``deployment``: one the source can resolve (its answer is returned); ``missing``: one it
    cannot, which must fail with an AgentError (ModelNotFound or ModelSourceError)."""
    _named(source, ModelSource)
    assert inspect.iscoroutinefunction(source.resolve), "ModelSource.resolve must be 'async def'"
    resolved = None
    if deployment is not None:
        lines: list[str] = []
        resolved = await source.resolve(deployment, lines.append)
        assert isinstance(resolved, ResolvedModel), f"resolve returned {resolved!r}, not a ResolvedModel"
        assert resolved.path.is_dir(), f"resolve returned {resolved.path}, which is not a local directory"
        assert resolved.description, "ResolvedModel.description is what an operator reads: give one"
        assert all(isinstance(line, str) and "\n" not in line for line in lines), "progress takes one-line strings"
    if missing is not None:
        try:
            await source.resolve(missing, lambda _: None)
        except Exception as err:
            _agent_error_only(err, f"resolve({missing.model!r})")
        else:
            raise AssertionError(f"resolve({missing.model!r}) returned instead of raising ModelNotFound")
    return resolved


async def check_health_strategy(
    strategy: HealthStrategy, target: EngineTarget | None = None, *, timeout: float = 10.0
) -> CheckResult | None:
    """``target``: a healthy engine (the fake_engine fixture), which must pass; the check must
    also fail cleanly against an engine that is not there."""
    _named(strategy, HealthStrategy)
    assert isinstance(strategy.deep, bool), "HealthStrategy.deep must be a bool"
    assert inspect.iscoroutinefunction(strategy.check), "HealthStrategy.check must be 'async def'"
    passed = None
    if target is not None:
        passed = await asyncio.wait_for(strategy.check(target, timeout), timeout * 3)
        assert isinstance(passed, CheckResult), f"check returned {passed!r}, not a CheckResult"
        assert passed.ok, f"check failed on a healthy engine: {passed.detail}"
    try:
        failed = await asyncio.wait_for(strategy.check(unreachable_target(), timeout), timeout * 3)
    except Exception as err:
        _agent_error_only(err, "check() on an engine that is not there")
    else:
        assert isinstance(failed, CheckResult) and not failed.ok, "check passed on an engine that is not there"
        assert failed.detail, "a failed CheckResult needs a detail an operator can read"
    return passed


async def check_test_runner(
    runner: TestRunner,
    spec: TestSpec,
    context: TestContext,
    target: EngineTarget | None = None,
) -> list[TestOutcome]:
    """``spec`` must be valid (no problems); with ``target`` (a healthy engine) every outcome must
    pass; against an engine that is not there it must report failure, not raise anything else."""
    _named(runner, TestRunner)
    assert inspect.iscoroutinefunction(runner.run), "TestRunner.run must be 'async def'"
    problems = list(runner.problems(spec, context))
    assert all(isinstance(problem, str) for problem in problems), "problems() returns strings"
    assert not problems, f"problems() found {problems} in a spec meant to be valid"
    outcomes: list[TestOutcome] = []
    if target is not None:
        outcomes = list(await asyncio.wait_for(runner.run(target, spec, context), spec.timeout))
        assert outcomes and all(isinstance(o, TestOutcome) for o in outcomes), "run returns TestOutcomes"
        assert all(o.ok for o in outcomes), f"failed on a healthy engine: {[o.detail for o in outcomes if not o.ok]}"
    try:
        failed = list(await asyncio.wait_for(runner.run(unreachable_target(), spec, context), spec.timeout))
    except Exception as err:
        _agent_error_only(err, "run() on an engine that is not there")
    else:
        assert any(not o.ok and o.detail for o in failed), "run passed (or said nothing) with no engine there"
    return outcomes


def check_gpu_backend(backend: GpuBackend) -> list[GpuSnapshot]:
    """An unavailable backend says why (a GpuError); an available one lists consistent devices."""
    _named(backend, GpuBackend)
    reason = backend.unavailable()
    assert reason is None or isinstance(reason, GpuError), f"unavailable() returned {reason!r}: None or a GpuError"
    if reason is not None:
        assert reason.message and reason.hint, "unavailable() needs a message and a hint (what to install)"
        assert backend.unavailable() is not None, "unavailable() must keep its answer"
        return []
    devices = list(backend.list_devices())
    assert all(isinstance(device, GpuDevice) for device in devices), "list_devices returns GpuDevices"
    uuids = [device.uuid for device in devices]
    assert len(set(uuids)) == len(uuids), f"device UUIDs repeat: {uuids}"
    for device in devices:
        assert 0 <= device.memory_free <= device.memory_total, f"{device.uuid}: free memory outside 0..total"
    snapshots = list(backend.snapshot())
    assert all(isinstance(snap, GpuSnapshot) for snap in snapshots), "snapshot returns GpuSnapshots"
    assert [snap.uuid for snap in snapshots] == uuids, "snapshot and list_devices disagree on the devices"
    watch = backend.watch_xids()
    try:
        assert isinstance(list(watch.wait(0.0)), list), "XidWatch.wait returns a sequence"
    finally:
        watch.close()
    return snapshots


def check_event_sink(
    emit: Callable[[AgentEvent], Any], events: Iterable[AgentEvent] | None = None, *, within: float = 5.0
) -> Sequence[AgentEvent]:
    """``emit``: your ``agent_event`` implementation (or ``plugins.emit``). It takes every kind of
    event, raises nothing and does not block the daemon (each call returns within ``within`` s)."""
    import time

    sent = list(events or [AgentEvent("m", kind, f"contract check: {kind}", time.time()) for kind in EVENT_KINDS])
    for event in sent:
        started = time.monotonic()
        result = emit(event)
        assert not inspect.isawaitable(result), "agent_event is synchronous: hand slow work to a thread"
        if isinstance(result, list):  # plugins.emit: the failures of the sinks
            assert not result, f"the event sink failed: {result[0]}"
        assert time.monotonic() - started < within, f"agent_event blocked for over {within}s on {event.kind}"
    return sent
