"""A power loss: what the operator wanted running comes back at boot, what they stopped stays
stopped, with the units' own enablement alone and with the daemon alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import UserManager, user_manager_available
from harness.agent_cli import AgentCli, agent_env, agent_toml, write_tiny_model_dir
from harness.ci import missing
from harness.ports import agent_ports
from harness.processes import wait_for

NAMES = ("alpha", "bravo", "charlie")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[dict]:
    """A manager of its own (it is killed and booted again), with the unit directory in the
    user's config directory, which survives a reboot as /etc/systemd does."""
    reason = user_manager_available()
    if reason:
        missing(f"a systemd user manager: {reason}")
    box = {"manager": UserManager.boot()}
    try:
        yield box
    finally:
        box["manager"].close()


def _agent(manager: UserManager, tmp_path: Path) -> AgentCli:
    config_dir = tmp_path / "conf"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "agent.toml").write_text(
        agent_toml(
            unit_dir=manager.config_unit_dir,
            state_dir=tmp_path / "state",
            log_dir=tmp_path / "logs",
            ports=agent_ports(),
            socket=tmp_path / "agent.sock",
        )
    )
    return AgentCli(
        config_dir=config_dir, env=agent_env(manager.env), log_dir=tmp_path / "logs", state_dir=tmp_path / "state"
    )


def _active(manager: UserManager, name: str) -> str:
    return manager.show(f"vllm@{name}.service", "ActiveState")["ActiveState"]


@pytest.mark.parametrize("comes_back_by", ["enabled-units", "daemon"])
def test_power_loss_brings_back_exactly_the_wanted_deployments(host, tmp_path: Path, comes_back_by: str) -> None:  # noqa: ANN001
    manager: UserManager = host["manager"]
    agent = _agent(manager, tmp_path)
    agent.ok("init")
    model = write_tiny_model_dir(tmp_path / "models" / "tiny")
    for name in NAMES:
        agent.write_deployment(name, f'model = "{model}"\nargs = ["--fake-load-time", "0.3"]\n')
        agent.ok("start", name)
    agent.ok("stop", "bravo")
    assert agent.status("bravo")["desired"] == "stopped"
    assert agent.status("alpha")["desired"] == "running"
    wants = manager.config_unit_dir / "default.target.wants"
    enabled = sorted(link.name for link in wants.iterdir())
    assert enabled == ["vllm-agent.service", "vllm@alpha.service", "vllm@charlie.service"]
    if comes_back_by == "daemon":
        # An install whose units were never enabled: only the daemon can bring them back.
        for name in ("alpha", "charlie"):
            (wants / f"vllm@{name}.service").unlink()
    else:
        (wants / "vllm-agent.service").unlink()

    host["manager"] = manager = UserManager.boot(base_dir=manager.power_loss())

    for name in ("alpha", "charlie"):
        wait_for(f"{name} ready after the boot", lambda n=name: agent.status(n)["state"] == "ready", timeout=60)
    if comes_back_by == "daemon":
        # Evidence that the daemon's pass ran, before asserting what it left alone.
        wait_for("the daemon's first reconcile", lambda: "reconciled" in agent.log("vllm-agent"), timeout=30)
        lines = agent.log("vllm-agent").splitlines()
        reconciled = [json.loads(line[line.index("{") :]) for line in lines if '"reconciled"' in line]
        assert sorted(reconciled[0]["started"]) == ["alpha", "charlie"]
        assert wait_for("links repaired", lambda: (wants / "vllm@alpha.service").is_symlink())
    else:
        booted = ("running", "degraded")
        wait_for("boot finished", lambda: manager.systemctl("is-system-running", check=False).stdout.strip() in booted)
        assert _active(manager, "vllm-agent") == "inactive"
    assert _active(manager, "bravo") == "inactive"
    bravo = agent.status("bravo")
    assert (bravo["state"], bravo["desired"], bravo["reason"]) == ("stopped", "stopped", "")
    assert agent.run("status").returncode == 0  # nothing needs an operator


def test_wanted_but_not_running_after_a_power_loss_says_why(host, tmp_path: Path) -> None:  # noqa: ANN001
    manager: UserManager = host["manager"]
    agent = _agent(manager, tmp_path)
    agent.ok("init")
    model = write_tiny_model_dir(tmp_path / "models" / "tiny")
    agent.write_deployment("delta", f'model = "{model}"\nargs = ["--fake-load-time", "0.3"]\n')
    agent.ok("start", "delta")
    wants = manager.config_unit_dir / "default.target.wants"
    for link in wants.iterdir():
        link.unlink()  # neither the unit nor the daemon comes back by itself

    host["manager"] = manager = UserManager.boot(base_dir=manager.power_loss())

    done = agent.run("status", "delta", "--json")
    row = json.loads(done.stdout)["deployments"][0]
    assert (row["state"], row["desired"]) == ("stopped", "running")
    assert row["reason"] == "wanted, not running since boot: it was serving when its host went down"
    assert done.returncode == 3  # it needs an operator (or the daemon)
    agent.ok("start", "delta")
    assert agent.status("delta")["state"] == "ready"
