"""`vllm-agent start NAME --model M` under the real user manager: the file changes, the unit serves M."""

from __future__ import annotations

from pathlib import Path

import httpx
from harness.agent_cli import AgentCli, write_tiny_model_dir

START = 180.0  # seconds: a loaded 2-core machine shared with other test runs


def served_root(url: str) -> str:
    return httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["root"]


def test_start_with_a_model_serves_it_and_keeps_it_in_the_file(
    agent: AgentCli, model_dir: Path, tmp_path: Path
) -> None:
    agent.ok("deploy", "swap", "--model", str(model_dir), timeout=START)
    assert served_root(agent.status("swap")["url"]) == str(model_dir)
    other = write_tiny_model_dir(tmp_path / "models" / "other")
    done = agent.ok("start", "swap", "--model", str(other), timeout=START)
    assert f"model = '{other}'" in done.stdout and "ready" in done.stdout
    assert served_root(agent.status("swap")["url"]) == str(other)  # restarted onto the new model
    assert f'model = "{other}"' in agent.model_file("swap").read_text()
    assert agent.status("swap")["model"] == str(other)


def test_start_with_a_bad_model_changes_nothing(agent: AgentCli, model_dir: Path) -> None:
    agent.ok("deploy", "keep", "--model", str(model_dir), timeout=START)
    before = agent.model_file("keep").read_text()
    pid = agent.status("keep")["pid"]
    done = agent.run("start", "keep", "--model", "not/a/valid model")
    assert done.returncode == 2 and "models.d/keep.toml: model:" in done.stderr
    assert agent.model_file("keep").read_text() == before
    status = agent.status("keep")
    assert status["state"] == "ready" and status["pid"] == pid  # not restarted
