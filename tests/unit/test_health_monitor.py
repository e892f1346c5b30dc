"""HealthMonitor: order, first failure, the failure count, deep-check gating and the time bound.

The strategies are tiny classes that follow the HealthStrategy Protocol; no engine is involved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import pytest
from vllm_agent.config.schema import HealthSettings
from vllm_agent.errors import PluginError
from vllm_agent.plugin_api import CheckResult, EngineTarget, HealthStrategy
from vllm_agent.unit.health import HealthMonitor

TARGET = EngineTarget(deployment="t", url="http://127.0.0.1:1", served_model_name="tiny")


class Scripted:
    """Answers from a script of booleans (the last one repeats) and counts its calls."""

    def __init__(self, name: str, script: Iterable[bool] = (True,), deep: bool = False) -> None:
        self.name = name
        self.deep = deep
        self.script = list(script)
        self.calls = 0
        self.timeouts: list[float] = []
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True

    async def check(self, target: EngineTarget, timeout: float) -> CheckResult:
        ok = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        self.timeouts.append(timeout)
        return CheckResult(ok=ok, detail="fine" if ok else "broken", latency=0.001)


class Sleeper:
    """Ignores its deadline: only the monitor's bound stops it."""

    name = "sleeper"
    deep = False

    async def check(self, target: EngineTarget, timeout: float) -> CheckResult:
        await asyncio.sleep(60)
        return CheckResult(ok=True)


class Crashing:
    name = "crashing"
    deep = False

    async def check(self, target: EngineTarget, timeout: float) -> CheckResult:
        raise ValueError("plugin bug")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def monitor(*strategies: HealthStrategy, clock: Clock | None = None, **settings) -> HealthMonitor:
    settings.setdefault("checks", [s.name for s in strategies])
    return HealthMonitor(strategies, HealthSettings(**settings), TARGET, clock=clock or Clock())


def test_the_test_strategies_follow_the_protocol() -> None:
    assert all(isinstance(s, HealthStrategy) for s in (Scripted("a"), Sleeper(), Crashing()))


async def test_a_passing_round_runs_every_check_in_the_configured_order() -> None:
    http, models = Scripted("http"), Scripted("models")
    result = await monitor(http, models, checks=["models", "http"], timeout=2.5).round()
    assert result.ok and result.failed_check is None and not result.unhealthy
    assert [name for name, _ in result.results] == ["models", "http"]
    assert http.timeouts == [2.5]  # each strategy gets the configured timeout


async def test_only_configured_checks_run() -> None:
    http, extra = Scripted("http"), Scripted("extra", [False])
    result = await monitor(http, extra, checks=["http"]).round()
    assert result.ok and extra.calls == 0


async def test_the_round_stops_at_the_first_failing_check() -> None:
    first, second, third = Scripted("a"), Scripted("b", [False]), Scripted("c")
    result = await monitor(first, second, third).round()
    assert not result.ok
    assert result.failed_check == "b"
    assert result.detail == "broken"
    assert [name for name, _ in result.results] == ["a", "b"]
    assert third.calls == 0


async def test_unhealthy_after_threshold_consecutive_failed_rounds() -> None:
    mon = monitor(Scripted("http", [False]), failure_threshold=3)
    rounds = [await mon.round() for _ in range(4)]
    assert [r.consecutive_failures for r in rounds] == [1, 2, 3, 4]
    assert [r.unhealthy for r in rounds] == [False, False, True, True]


async def test_one_passing_round_resets_the_count() -> None:
    mon = monitor(Scripted("http", [False, False, True, False]), failure_threshold=3)
    rounds = [await mon.round() for _ in range(4)]
    assert [r.consecutive_failures for r in rounds] == [1, 2, 0, 1]
    assert not any(r.unhealthy for r in rounds)
    assert mon.consecutive_failures == 1


async def test_deep_checks_run_every_round_without_deep_interval() -> None:
    http, completion = Scripted("http"), Scripted("completion", deep=True)
    mon = monitor(http, completion)
    for _ in range(3):
        await mon.round()
    assert (http.calls, completion.calls) == (3, 3)


async def test_deep_checks_wait_for_deep_interval() -> None:
    clock = Clock()
    http, completion = Scripted("http"), Scripted("completion", deep=True)
    mon = monitor(http, completion, clock=clock, deep_interval=60)
    ran = []
    for now in (0, 10, 59, 60, 70, 121):
        clock.now = 1000.0 + now
        result = await mon.round()
        ran.append([name for name, _ in result.results])
    assert ran == [
        ["http", "completion"],
        ["http"],
        ["http"],
        ["http", "completion"],
        ["http"],
        ["http", "completion"],
    ]


async def test_a_failed_deep_check_stays_due_until_it_passes() -> None:
    # Otherwise a hung engine would pass the cheap rounds in between and never reach the threshold.
    clock = Clock()
    http, completion = Scripted("http"), Scripted("completion", [True, False, False, True], deep=True)
    mon = monitor(http, completion, clock=clock, deep_interval=60, failure_threshold=2)
    assert (await mon.round()).ok
    clock.now += 60
    first = await mon.round()
    clock.now += 10
    second = await mon.round()
    clock.now += 10
    third = await mon.round()
    clock.now += 10
    fourth = await mon.round()
    assert (first.failed_check, second.failed_check) == ("completion", "completion")
    assert second.unhealthy
    assert third.ok and [n for n, _ in third.results] == ["http", "completion"]
    assert fourth.ok and [n for n, _ in fourth.results] == ["http"]  # passed again: back to the interval


async def test_a_shallow_failure_before_the_deep_check_keeps_it_due() -> None:
    clock = Clock()
    http, completion = Scripted("http", [True, False, True, True]), Scripted("completion", deep=True)
    mon = monitor(http, completion, clock=clock, deep_interval=60)
    await mon.round()
    clock.now += 60
    assert (await mon.round()).failed_check == "http"
    clock.now += 1
    assert [n for n, _ in (await mon.round()).results] == ["http", "completion"]


async def test_a_strategy_that_overruns_the_timeout_fails_the_round() -> None:
    mon = HealthMonitor([Sleeper()], HealthSettings(checks=["sleeper"], timeout=0.1, failure_threshold=1), TARGET)
    started = time.monotonic()
    result = await mon.round()
    assert time.monotonic() - started < 1.0
    assert not result.ok and result.unhealthy
    assert result.failed_check == "sleeper"
    assert result.detail == "timed out after 0.1s"
    assert result.results[0][1].latency >= 0.1


async def test_a_strategy_that_raises_fails_the_round_and_names_itself() -> None:
    result = await monitor(Crashing()).round()
    assert not result.ok
    assert "'crashing' check itself failed" in result.detail and "plugin bug" in result.detail


def test_a_configured_check_without_a_strategy_is_refused() -> None:
    with pytest.raises(PluginError, match="no health strategy named 'completion'.*available: http"):
        HealthMonitor([Scripted("http")], HealthSettings(checks=["http", "completion"]), TARGET)


async def test_records_keep_the_latest_result_of_each_check_in_order() -> None:
    clock = Clock()
    http, completion = Scripted("http", [True, False]), Scripted("completion", deep=True)
    mon = HealthMonitor(
        [completion, http], HealthSettings(checks=["http", "completion"], deep_interval=60), TARGET,
        clock=clock, wall_clock=lambda: 1.7e9,
    )  # fmt: skip
    assert mon.records() == []
    await mon.round()
    clock.now += 1
    await mon.round()  # http fails; completion is not due and keeps its earlier record
    records = mon.records()
    assert [r["name"] for r in records] == ["http", "completion"]
    assert records[0] == {"name": "http", "ok": False, "detail": "broken", "latency": 0.001, "at": 1.7e9}
    assert records[1]["ok"] is True


async def test_aclose_closes_the_strategies_that_can_be_closed() -> None:
    http = Scripted("http")
    mon = monitor(http, Sleeper())  # Sleeper has no aclose: skipped
    await mon.aclose()
    assert http.closed
