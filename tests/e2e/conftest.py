from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.agent_cli import AgentCli, agent_env, agent_toml, write_tiny_model_dir
from harness.ports import agent_ports


@pytest.fixture
def agent(user_manager, tmp_path: Path) -> Iterator[AgentCli]:  # noqa: ANN001 - harness fixture
    config_dir = tmp_path / "conf"
    state_dir, log_dir = tmp_path / "state", tmp_path / "logs"
    config_dir.mkdir()
    (config_dir / "agent.toml").write_text(
        agent_toml(
            unit_dir=user_manager.unit_dir,
            state_dir=state_dir,
            log_dir=log_dir,
            ports=agent_ports(),
            socket=tmp_path / "agent.sock",
        )
    )
    cli = AgentCli(config_dir=config_dir, env=agent_env(user_manager.env), log_dir=log_dir, state_dir=state_dir)
    cli.ok("init")
    yield cli
    user_manager.systemctl("stop", "vllm-agent.service", check=False)
    user_manager.stop_all("vllm@*")
    for dropins in user_manager.unit_dir.glob("vllm@*.service.d"):
        shutil.rmtree(dropins)
    for link in user_manager.unit_dir.glob("*.target.wants/vllm*"):
        link.unlink()  # enablement: the next test starts from none
    user_manager.systemctl("reset-failed", check=False)
    user_manager.daemon_reload()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_tiny_model_dir(tmp_path / "models" / "tiny")
