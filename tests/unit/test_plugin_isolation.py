"""A broken third-party plugin is reported and isolated; everything else runs.

The broken plugins are a real distribution with entry points (tests/plugins/broken, installed by
scripts/setup); $VLLM_AGENT_TEST_BROKEN chooses which of them break: "import" (fails to import),
"api" (declares a hook API range without ours), "provider" (its providers raise).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from vllm_agent import HOOK_API_VERSION
from vllm_agent.config.schema import AgentSettings, Deployment, HealthSettings
from vllm_agent.errors import GpuError, ModelSourceError, PluginError
from vllm_agent.gpu.command import report
from vllm_agent.plugin_api import AgentEvent, EngineTarget, TestContext, TestSpec
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.unit.health import HealthMonitor
from vllm_agent.unit.posttests import run_spec

AGENT = [sys.executable, "-m", "vllm_agent"]
ENV = "VLLM_AGENT_TEST_BROKEN"


def agent(tmp_path: Path, broken: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**__import__("os").environ, ENV: broken}
    return subprocess.run(
        [*AGENT, "--config-dir", str(tmp_path), *args], capture_output=True, text=True, timeout=60, env=env
    )


def rows(shown: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    assert shown.returncode == 0, shown.stderr
    return {row["name"]: row for row in json.loads(shown.stdout)["plugins"]}


def test_a_plugin_that_fails_to_import_is_listed_with_its_error_and_the_rest_load(tmp_path: Path) -> None:
    found = rows(agent(tmp_path, "import", "plugins", "--json"))
    assert found["broken_import"]["status"] == "failed"
    assert "import failed: ImportError" in found["broken_import"]["reason"]
    assert found["broken_import"]["distribution"] == "vllm-agent-broken 0.1.0"
    assert found["local"]["status"] == "loaded" and "source:local" in found["local"]["providers"]
    text = agent(tmp_path, "import", "plugins")
    assert text.returncode == 0
    assert any(line.startswith("broken_import") and "failed" in line for line in text.stdout.splitlines())


def test_a_plugin_with_an_incompatible_hook_api_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "api")
    plugins = make_plugin_manager(AgentSettings())
    (row,) = [row for row in plugins.info() if row.name == "broken_api"]
    assert (row.status, row.hook_api) == ("refused", ">=2.0,<3")
    assert (
        row.reason == f"plugin 'broken_api' supports hook API >=2.0,<3; this vllm-agent has hook API {HOOK_API_VERSION}"
    )
    assert "broken-api" not in plugins.model_sources()  # never registered, never called
    assert "local" in plugins.model_sources()
    with pytest.raises(PluginError) as caught:
        plugins.model_source("broken-api")
    assert "plugin 'broken_api', which may provide it, refused: plugin 'broken_api' supports" in caught.value.message


def test_a_compatible_declared_range_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    (row,) = [row for row in make_plugin_manager(AgentSettings()).info() if row.name == "broken_api"]
    assert (row.status, row.hook_api) == ("loaded", ">=1.0,<2")


def test_validate_names_the_failed_plugin_for_the_deployment_that_needs_it(tmp_path: Path) -> None:
    (tmp_path / "models.d").mkdir()
    (tmp_path / "models.d" / "needs.toml").write_text('model = "org/m"\nsource = "broken-api"\n')
    (tmp_path / "models.d" / "fine.toml").write_text(f'model = "{tmp_path}"\nsource = "local"\n')
    shown = agent(tmp_path, "api,import", "validate")
    assert shown.returncode == 2
    problems = [line for line in shown.stderr.splitlines() if "models.d/" in line]
    assert len(problems) == 1 and "models.d/needs.toml: source: no model source named 'broken-api'" in problems[0]
    assert "plugin 'broken_api', which may provide it, refused" in problems[0]
    assert "plugin 'broken_import', which may provide it, failed: import failed" in problems[0]


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setenv(ENV, "provider")
    return make_plugin_manager(AgentSettings())


TARGET = EngineTarget(deployment="m", url="http://127.0.0.1:9", served_model_name="m")


async def test_an_exception_in_a_model_source_is_its_failure_naming_the_plugin(broken, tmp_path: Path) -> None:  # noqa: ANN001
    deployment = Deployment(name="m", model="org/m", source="broken-source")
    with pytest.raises(ModelSourceError) as caught:
        await broken.model_source("broken-source").resolve(deployment, lambda _: None)
    assert caught.value.message == (
        "plugin 'broken_provider' failed in model source 'broken-source'.resolve(): RuntimeError('resolve exploded')"
    )
    assert 'block = ["broken_provider"]' in caught.value.hint


async def test_an_exception_in_a_health_check_is_a_failed_check_naming_the_plugin(broken) -> None:  # noqa: ANN001
    settings = HealthSettings(checks=["broken-check"], timeout=5)
    result = await HealthMonitor(list(broken.health_strategies().values()), settings, TARGET).round()
    assert not result.ok and result.failed_check == "broken-check"
    assert "plugin 'broken_provider' failed in health strategy 'broken-check'.check()" in result.detail


async def test_an_exception_in_a_test_runner_is_a_failed_test_naming_the_plugin(broken, tmp_path: Path) -> None:  # noqa: ANN001
    spec = TestSpec(runner="broken-tests", name="suite")
    context = TestContext(config_dir=tmp_path, deployment=Deployment(name="m", model="org/m"))
    (outcome,) = await run_spec(broken, TARGET, spec, context)
    assert not outcome.ok
    assert outcome.detail.startswith("plugin 'broken_provider' failed in test runner 'broken-tests'.run(): KeyError")


def test_an_exception_in_a_gpu_backend_is_that_backend_unavailable(broken, tmp_path: Path) -> None:  # noqa: ANN001
    backends = broken.gpu_backends()
    with pytest.raises(GpuError, match="plugin 'broken_provider' failed in GPU backend 'brokengpu'.list_devices()"):
        backends["brokengpu"].list_devices()
    doc = report(backends, proc=tmp_path)
    (row,) = [row for row in doc["backends"] if row["name"] == "brokengpu"]
    assert row["available"] is False and "snapshot exploded" in row["reason"] and "broken_provider" in row["reason"]


def test_an_event_sink_that_raises_is_reported_and_the_others_still_get_the_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got: list[AgentEvent] = []

    class Sink:
        from vllm_agent import hookimpl

        @hookimpl
        def agent_event(self, event: AgentEvent) -> None:
            got.append(event)

    monkeypatch.setenv(ENV, "provider")
    plugins = make_plugin_manager(AgentSettings(), extra=[("alerts", Sink())])
    event = AgentEvent(deployment="m", kind="ready", reason="tests passed", timestamp=1.0)
    (failure,) = plugins.emit(event)
    assert (
        failure.message
        == "plugin 'broken_provider' failed in agent_event: RuntimeError('event sink exploded on ready')"
    )
    assert got == [event]


def test_a_hook_that_raises_while_offering_providers_fails_only_its_plugin() -> None:
    from vllm_agent import hookimpl

    class Exploding:
        @hookimpl
        def agent_model_sources(self, settings):  # noqa: ANN001, ANN201
            raise RuntimeError("cannot list sources")

    plugins = make_plugin_manager(AgentSettings(), extra=[("exploding", Exploding())])
    assert "local" in plugins.model_sources()
    (row,) = [row for row in plugins.info() if row.name == "exploding"]
    assert row.status == "failed" and row.reason == "agent_model_sources raised RuntimeError('cannot list sources')"
    assert plugins.problems() == [
        "plugin 'exploding' failed: agent_model_sources raised RuntimeError('cannot list sources')"
    ]
