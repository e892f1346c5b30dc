"""Broken third-party plugins under real units: each is reported and isolated.

tests/plugins/broken is a real distribution (installed by scripts/setup) whose plugins break when
$VLLM_AGENT_TEST_BROKEN names them: it fails to import, declares a hook API range without ours,
and offers providers that raise. The CLI and each unit's launcher (through the deployment's
``[env]``) see all three at once.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.agent_cli import AgentCli

BROKEN = "import,api,provider"


def test_broken_plugins_fail_only_the_deployment_that_needs_them(agent: AgentCli, model_dir: Path) -> None:
    agent.env["VLLM_AGENT_TEST_BROKEN"] = BROKEN
    env = f'[env]\nVLLM_AGENT_TEST_BROKEN = "{BROKEN}"\n'
    engine = 'args = ["--fake-load-time", "0.3"]\ntests = []\n'
    agent.write_deployment("fine", f'model = "{model_dir}"\n{engine}{env}')
    agent.write_deployment("needs", f'model = "org/m"\nsource = "broken-source"\n{engine}{env}')

    plugins = {row["name"]: row for row in json.loads(agent.ok("plugins", "--json").stdout)["plugins"]}
    assert plugins["broken_import"]["status"] == "failed"
    assert plugins["broken_api"]["status"] == "refused"
    assert plugins["broken_provider"]["status"] == "loaded"

    agent.ok("start", "fine", timeout=180)
    assert agent.status("fine")["state"] == "ready"

    done = agent.run("start", "needs", timeout=180)
    assert done.returncode != 0
    reason = (
        "plugin 'broken_provider' failed in model source 'broken-source'.resolve(): RuntimeError('resolve exploded')"
    )
    assert reason in done.stderr
    status = agent.status("needs")
    assert status["state"] == "failed" and status["restarts"] == 0, status  # a plugin bug is not retried
    assert agent.status("fine")["state"] == "ready"  # untouched
