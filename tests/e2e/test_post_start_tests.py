"""Post-start tests under real units: a deployment that fails them is never ready."""

from __future__ import annotations

import json
from pathlib import Path

from harness.agent_cli import AgentCli


def test_smoke_tests_run_before_ready_by_default(agent: AgentCli, model_dir: Path) -> None:
    agent.ok("deploy", "smoke", "--model", str(model_dir), "--", "--fake-load-time", "0.3")
    saved = json.loads((agent.state_dir / "deployments" / "smoke.json").read_text())
    names = {test["name"] for test in saved["tests"]}
    assert {"openai-smoke/models", "openai-smoke/chat-stream", "openai-smoke/invalid-request"} <= names
    assert all(test["ok"] for test in saved["tests"])


def test_a_failing_script_keeps_the_deployment_from_ever_being_ready(agent: AgentCli, model_dir: Path) -> None:
    script = agent.config_dir / "tests.d" / "must-say-hello.sh"
    script.parent.mkdir()
    script.write_text(
        '#!/bin/sh\necho "asked $VLLM_AGENT_MODEL at $VLLM_AGENT_URL"\necho "expected hello" >&2\nexit 3\n'
    )
    script.chmod(0o755)
    agent.write_deployment(
        "picky",
        f'model = "{model_dir}"\nargs = ["--fake-load-time", "0.3"]\n'
        '[[tests]]\nrunner = "script"\npath = "must-say-hello.sh"\n',
    )
    done = agent.run("start", "picky")
    assert done.returncode == 1
    assert "post-start test must-say-hello" in done.stderr or "post-start test script" in done.stderr
    assert "exit status 3: expected hello" in done.stderr
    status = agent.status("picky")
    assert status["state"] == "failed" and status["restarts"] == 0  # a test failure is not retried
    assert "asked picky at http://127.0.0.1:" in agent.log("picky")  # the full output is in the log


def test_a_missing_script_is_a_config_error_before_any_start(agent: AgentCli, model_dir: Path) -> None:
    agent.write_deployment("nofile", f'model = "{model_dir}"\n[[tests]]\nrunner = "script"\npath = "nope.sh"\n')
    done = agent.run("validate")
    assert done.returncode == 2
    assert "models.d/nofile.toml: tests[0]: path:" in done.stderr and "nope.sh does not exist" in done.stderr


def test_vllm_agent_test_reruns_the_tests_on_a_ready_deployment(agent: AgentCli, model_dir: Path) -> None:
    agent.ok("deploy", "rerun", "--model", str(model_dir), "--", "--fake-load-time", "0.3")
    done = agent.ok("test", "rerun", "--json")
    report = json.loads(done.stdout)
    assert report["ok"] and len(report["tests"]) == 5
    assert all(test["duration"] >= 0 for test in report["tests"])
    plain = agent.ok("test", "rerun").stdout
    assert "PASS  openai-smoke/completion" in plain and "5 passed, 0 failed" in plain


def test_vllm_agent_test_refuses_a_stopped_deployment(agent: AgentCli, model_dir: Path) -> None:
    agent.ok("deploy", "idle", "--model", str(model_dir), "--no-start")
    done = agent.run("test", "idle")
    assert done.returncode == 1 and "idle is stopped, not serving" in done.stderr
