"""The testing kit's contract suites pass for every built-in provider, and catch a broken one.

Uses the kit's own fixtures (fake_engine, fake_pynvml, fake_amdsmi, agent_plugins) exactly as a
plugin author's tests would: they come from the ``pytest11`` entry point, not from a conftest.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.agent_cli import write_tiny_model_dir
from vllm_agent import hookimpl
from vllm_agent.config.schema import AgentSettings, Deployment, TestSpec
from vllm_agent.plugin_api import AgentEvent, TestContext
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.testing import (
    check_event_sink,
    check_gpu_backend,
    check_health_strategy,
    check_model_source,
    check_test_runner,
)
from vllm_agent_plugins.gpu_nvml import NvmlBackend
from vllm_agent_plugins.gpu_rocm import RocmBackend
from vllm_agent_plugins.source_local import LocalModelSource

BUILT_IN = make_plugin_manager(AgentSettings())


async def test_the_local_source_passes_the_model_source_contract(tmp_path: Path) -> None:
    model = write_tiny_model_dir(tmp_path / "tiny")
    resolved = await check_model_source(
        LocalModelSource(),
        Deployment(name="m", model=str(model), source="local"),
        missing=Deployment(name="gone", model=str(tmp_path / "nothing-here"), source="local"),
    )
    assert resolved is not None and resolved.path == model


async def test_a_source_that_raises_a_plain_exception_fails_the_contract(tmp_path: Path) -> None:
    class Careless:
        name = "careless"

        async def resolve(self, deployment, progress):  # noqa: ANN001, ANN201
            raise FileNotFoundError(deployment.model)

    with pytest.raises(AssertionError, match="raise an AgentError subclass"):
        await check_model_source(Careless(), missing=Deployment(name="m", model="/nope", source="careless"))


@pytest.mark.parametrize("name", sorted(BUILT_IN.health_strategies()))
async def test_each_built_in_health_strategy_passes_its_contract(name: str, fake_engine) -> None:  # noqa: ANN001
    strategy = make_plugin_manager(AgentSettings()).health_strategy(name)  # fresh: some keep state
    result = await check_health_strategy(strategy, fake_engine.target)
    assert result is not None and result.ok


async def test_a_health_check_that_passes_without_an_engine_fails_the_contract() -> None:
    from vllm_agent.plugin_api import CheckResult

    class Optimist:
        name = "optimist"
        deep = False

        async def check(self, target, timeout):  # noqa: ANN001, ANN201
            return CheckResult(ok=True)

    with pytest.raises(AssertionError, match="passed on an engine that is not there"):
        await check_health_strategy(Optimist())


async def test_the_smoke_test_runner_passes_the_test_runner_contract(tmp_path: Path, fake_engine) -> None:  # noqa: ANN001
    context = TestContext(config_dir=tmp_path, deployment=Deployment(name="m", model="org/m"))
    outcomes = await check_test_runner(
        BUILT_IN.test_runner("openai-smoke"), TestSpec(runner="openai-smoke"), context, fake_engine.target
    )
    assert outcomes and all(outcome.ok for outcome in outcomes)


def test_the_nvml_and_rocm_backends_pass_the_gpu_backend_contract(fake_pynvml, fake_amdsmi) -> None:  # noqa: ANN001
    assert len(check_gpu_backend(NvmlBackend(fake_pynvml(2)))) == 2
    assert len(check_gpu_backend(RocmBackend(fake_amdsmi(3)))) == 3
    no_driver = fake_pynvml(1, fail={"nvmlInit": 12})  # NVML_ERROR_LIBRARY_NOT_FOUND
    assert check_gpu_backend(NvmlBackend(no_driver)) == []  # unavailable, and says why


def test_an_event_sink_passes_and_a_raising_one_fails_the_contract(agent_plugins) -> None:  # noqa: ANN001
    got: list[AgentEvent] = []

    class Sink:
        @hookimpl
        def agent_event(self, event: AgentEvent) -> None:
            got.append(event)

    sent = check_event_sink(agent_plugins(Sink()).emit)
    assert got == list(sent) and {event.kind for event in got} >= {"ready", "failed", "stopped"}

    class Raising:
        @hookimpl
        def agent_event(self, event: AgentEvent) -> None:
            raise RuntimeError("webhook down")

    with pytest.raises(AssertionError, match="the event sink failed: plugin 'plugin-under-test' failed in agent_event"):
        check_event_sink(agent_plugins(Raising()).emit)
