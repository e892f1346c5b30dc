"""The built-in health strategies against the real fake engine (agent/testing/fake_vllm/).

The central case: a hung engine keeps /health at 200, and only ``completion`` notices, within its
deadline.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

import pytest
from harness.fake_engine import Fake
from harness.ports import PortLease
from vllm_agent.config.schema import AgentSettings
from vllm_agent.engine_http import request
from vllm_agent.plugin_api import EngineTarget, HealthStrategy
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent_plugins.health import CompletionCheck, HttpCheck, MetricsStallCheck, ModelsCheck, parse_metrics

SERVED = "tiny"


def target_of(fake: Fake, served: str = SERVED) -> EngineTarget:
    return EngineTarget(deployment="t", url=fake.base, served_model_name=served)


def wait_hung(fake: Fake) -> None:
    # The fake counts the request that wedged it as running once it hangs.
    fake.wait_for(lambda r: parse_metrics(r.text, SERVED).get("vllm:num_requests_running", 0) >= 1, "/metrics")


def test_the_plugin_offers_all_four_through_its_entry_point() -> None:
    strategies = make_plugin_manager(AgentSettings()).health_strategies()
    assert {"http", "models", "completion", "metrics-stall"} <= set(strategies)
    assert all(
        isinstance(strategies[name], HealthStrategy) for name in ("http", "models", "completion", "metrics-stall")
    )
    assert [strategies[n].deep for n in ("http", "models", "completion", "metrics-stall")] == [
        False,
        False,
        True,
        False,
    ]


async def test_http_passes_on_a_healthy_engine(start_fake_in_mode) -> None:
    fake = start_fake_in_mode()
    async with aclosing(HttpCheck()) as check:
        result = await check.check(target_of(fake), 2.0)
    assert result.ok, result.detail
    assert 0 < result.latency < 2.0


async def test_a_closed_provider_reopens_its_client_when_used_again(start_fake_in_mode) -> None:
    # Providers are shared (the plugin host caches them): one owner's aclose must not break another.
    fake = start_fake_in_mode()
    check = HttpCheck()
    assert (await check.check(target_of(fake), 2.0)).ok
    await check.aclose()
    assert (await check.check(target_of(fake), 2.0)).ok
    await check.aclose()


async def test_http_fails_clearly_when_nothing_listens() -> None:
    with PortLease() as nothing:  # bound, never listening
        async with aclosing(HttpCheck()) as check:
            result = await check.check(EngineTarget("t", f"http://127.0.0.1:{nothing.port}", SERVED), 2.0)
    assert not result.ok
    assert result.detail == "connection refused"


async def test_models_finds_the_served_name_and_names_the_others(start_fake_in_mode) -> None:
    fake = start_fake_in_mode()
    async with aclosing(ModelsCheck()) as check:
        found = await check.check(target_of(fake), 2.0)
        wrong = await check.check(target_of(fake, "other"), 2.0)
    assert found.ok, found.detail
    assert not wrong.ok
    assert "'other' is not served" in wrong.detail and "tiny" in wrong.detail


async def test_completion_passes_on_a_healthy_engine(start_fake_in_mode) -> None:
    fake = start_fake_in_mode()
    async with aclosing(CompletionCheck()) as check:
        result = await check.check(target_of(fake), 2.0)
    assert result.ok, result.detail


async def test_a_hung_engine_fails_completion_within_its_deadline_while_http_passes(start_fake_in_mode) -> None:
    fake = start_fake_in_mode("hang-after:0")
    wait_hung(fake)
    timeout = 1.0
    async with aclosing(HttpCheck()) as http, aclosing(CompletionCheck()) as completion:
        health = await http.check(target_of(fake), timeout)
        started = time.monotonic()
        result = await completion.check(target_of(fake), timeout)
        took = time.monotonic() - started
    assert health.ok, health.detail  # the trap: /health says all is well
    assert not result.ok
    assert result.detail == "no answer within 1s (engine hung?)"
    assert timeout <= took < timeout + 0.5
    assert result.latency == pytest.approx(took, abs=0.05)


async def test_a_dead_engine_fails_http(start_fake_in_mode) -> None:
    fake = start_fake_in_mode("engine-death-after:0", status=503)
    async with aclosing(HttpCheck()) as check:
        result = await check.check(target_of(fake), 2.0)
    assert not result.ok
    # The fake exits 5 s after its engine died, as vLLM does; a slow machine may already see it gone.
    assert result.detail in ("/health answered 503 (engine dead)", "connection refused")


async def test_metrics_stall_passes_on_an_idle_and_on_a_working_engine(start_fake_in_mode) -> None:
    fake = start_fake_in_mode()
    async with aclosing(MetricsStallCheck(window=1.0)) as stall, aclosing(CompletionCheck()) as completion:
        idle = await stall.check(target_of(fake), 2.0)
        assert (await completion.check(target_of(fake), 2.0)).ok
        after = await stall.check(target_of(fake), 2.0)
    assert idle.ok and idle.detail == "idle"
    assert after.ok, after.detail


async def test_metrics_stall_fails_after_the_window_on_a_hung_engine_with_a_request_in_flight(
    start_fake_in_mode,
) -> None:
    fake = start_fake_in_mode("hang-after:0")
    wait_hung(fake)
    now = [100.0]
    async with aclosing(MetricsStallCheck(window=1.0, clock=lambda: now[0])) as stall:
        body = {"model": SERVED, "prompt": "hello", "max_tokens": 4}
        in_flight = asyncio.create_task(request("POST", f"{fake.base}/v1/completions", json=body, timeout=30))
        try:
            await running_at_least(fake, 1)
            first = await stall.check(target_of(fake), 2.0)
            now[0] += 0.5
            within = await stall.check(target_of(fake), 2.0)
            now[0] += 0.7
            stalled = await stall.check(target_of(fake), 2.0)
        finally:
            in_flight.cancel()
            await asyncio.gather(in_flight, return_exceptions=True)
    assert first.ok and within.ok, (first.detail, within.detail)
    assert not stalled.ok
    assert stalled.detail == "1 requests running, no tokens generated for 1s"


async def running_at_least(fake: Fake, count: int, timeout: float = 5.0) -> None:
    """Wait without blocking the loop (the request in flight is a task in it)."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = parse_metrics((await request("GET", f"{fake.base}/metrics")).text, SERVED)
        if metrics["vllm:num_requests_running"] >= count:
            return
        assert time.monotonic() < deadline, f"fewer than {count} requests running after {timeout}s: {metrics}"
        await asyncio.sleep(0.02)


def samples(running: float, tokens: float, waiting: float = 0) -> dict[str, float]:
    return {
        "vllm:num_requests_running": running,
        "vllm:num_requests_waiting": waiting,
        "vllm:generation_tokens_total": tokens,
    }


def test_metrics_stall_counts_only_busy_time_without_progress_per_url() -> None:
    now = [0.0]
    stall = MetricsStallCheck(window=30.0, clock=lambda: now[0])
    assert stall.judge("a", samples(0, 10)) == (True, "idle")
    now[0] = 600.0  # idle for ten minutes, then a request arrives: not a stall yet
    assert stall.judge("a", samples(1, 10))[0]
    now[0] = 620.0
    assert stall.judge("a", samples(1, 15))[0]  # tokens moved
    now[0] = 649.0
    assert stall.judge("a", samples(1, 15, waiting=2))[0]
    assert stall.judge("b", samples(3, 0))[0]  # another engine: its own first look
    now[0] = 651.0
    assert stall.judge("a", samples(1, 15, waiting=2)) == (
        False,
        "1 requests running, 2 waiting, no tokens generated for 31s",
    )
    now[0] = 679.0
    assert stall.judge("b", samples(3, 0)) == (False, "3 requests running, no tokens generated for 30s")
    assert stall.judge("a", samples(1, 3))[0]  # the counter went down: a restarted engine


def test_parse_metrics_sums_the_served_model_and_skips_others() -> None:
    text = "\n".join([
        "# HELP vllm:num_requests_running Number of requests.",
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{model_name="tiny",engine="0"} 2.0',
        'vllm:num_requests_running{model_name="tiny",engine="1"} 1.0',
        'vllm:num_requests_running{model_name="other",engine="0"} 7.0',
        'vllm:generation_tokens_total{engine="0",model_name="tiny"} 1.5e3',
        "process_open_fds 12",
    ])  # fmt: skip
    parsed = parse_metrics(text, "tiny")
    assert parsed["vllm:num_requests_running"] == 3.0
    assert parsed["vllm:generation_tokens_total"] == 1500.0
    assert parsed["process_open_fds"] == 12.0


async def test_metrics_stall_fails_clearly_when_the_metrics_are_missing(start_fake_in_mode) -> None:
    fake = start_fake_in_mode()
    async with aclosing(MetricsStallCheck()) as stall:
        result = await stall.check(target_of(fake, "other"), 2.0)
    assert not result.ok
    assert "no vllm:num_requests_running" in result.detail and "'other'" in result.detail
