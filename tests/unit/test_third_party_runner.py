"""A third-party test runner, installed as a distribution with an entry point, is found, run by
the launcher's test step against the real fake engine, and can be blocked by name."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from harness.fake_engine import Fake
from vllm_agent.config.schema import AgentSettings, Deployment
from vllm_agent.errors import PluginError
from vllm_agent.plugin_api import EngineTarget, TestContext
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.unit.posttests import TestsFailed, run_post_start_tests

MODULE = "site_check_plugin"

PLUGIN = '''
"""A site's own post-start test: the engine lists the model the site expects."""
import httpx
from vllm_agent import hookimpl
from vllm_agent.plugin_api import TestOutcome


class SiteCheck:
    name = "site-check"

    def problems(self, spec, context):
        return [] if "expect" in spec.options else ["expect: required"]

    async def run(self, target, spec, context):
        async with httpx.AsyncClient(headers=target.headers) as client:
            answer = await client.get(f"{target.url}/v1/models")
        ids = [model["id"] for model in answer.json()["data"]]
        ok = spec.options["expect"] in ids
        return [TestOutcome(name="site-check", ok=ok, detail="" if ok else f"{spec.options['expect']} not in {ids}")]


@hookimpl
def agent_post_start_tests(settings):
    return [SiteCheck()]
'''


@pytest.fixture
def site_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install a distribution "site-check" 1.0 (module + dist-info) on sys.path."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / f"{MODULE}.py").write_text(PLUGIN)
    dist_info = site / "site_check-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: site-check\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[vllm_agent]\nsite_check = {MODULE}\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop(MODULE, None)


def deployment(expect: str) -> Deployment:
    return Deployment.from_json(
        {"name": "tiny", "model": "/models/tiny", "tests": [{"runner": "site-check", "expect": expect}]}
    )


@pytest.mark.usefixtures("site_plugin")
async def test_an_entry_point_runner_is_offered_and_run(engine: Fake, tmp_path: Path) -> None:
    plugins = make_plugin_manager(AgentSettings())
    assert {"site-check", "openai-smoke", "script", "pytest"} <= set(plugins.test_runners())
    assert plugins.provider_plugin("agent_post_start_tests", "site-check") == "site_check"
    [info] = [info for info in plugins.info() if info.name == "site_check"]
    assert (info.distribution, info.providers) == ("site-check 1.0", ("tests:site-check",))

    target = EngineTarget(deployment="tiny", url=engine.base, served_model_name="tiny")
    log = structlog.get_logger()
    passing = deployment("tiny")
    context = TestContext(config_dir=tmp_path, deployment=passing)
    [outcome] = await run_post_start_tests(plugins, target, passing, context, log=log)
    assert (outcome.name, outcome.ok) == ("site-check", True)

    failing = deployment("llama")
    with pytest.raises(TestsFailed) as failed:
        await run_post_start_tests(plugins, target, failing, TestContext(tmp_path, failing), log=log)
    assert failed.value.message == "post-start test site-check failed: llama not in ['tiny']"


@pytest.mark.usefixtures("site_plugin")
async def test_a_blocked_runner_is_gone(tmp_path: Path) -> None:
    plugins = make_plugin_manager(AgentSettings(plugins={"block": ["site_check"]}))
    assert "site-check" not in plugins.test_runners()
    assert "site_check" in plugins.blocked()
    target = EngineTarget(deployment="tiny", url="http://127.0.0.1:9", served_model_name="tiny")
    blocked = deployment("tiny")
    with pytest.raises(PluginError, match="tests.runner: no test runner named 'site-check'"):
        await run_post_start_tests(plugins, target, blocked, TestContext(tmp_path, blocked), log=structlog.get_logger())
