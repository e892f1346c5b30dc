"""A device fault end to end: an injected Xid 79 quarantines the device, and the daemon moves or
stops the deployment on it as its `on_gpu_failure` says; `gpus --release` lifts the quarantine.

Real units and the real daemon (vllm-agent.service) under the real user manager, on a fake GPU
host: the test plugin tests/plugins/fakegpu, which the CLI, each unit's launcher and the daemon
load by entry point, finds its device file through $VLLM_AGENT_FAKE_GPUS (the CLI's environment,
the deployments' `env` table, a drop-in for vllm-agent.service). The fake driver raises the Xid
events written to the file's `xid_file`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.agent_cli import AgentCli
from harness.processes import wait_for


def visible_device(user_manager, name: str) -> str:  # noqa: ANN001 - harness fixture
    shown = user_manager.show(f"vllm@{name}.service", "Environment")["Environment"]
    return dict(item.split("=", 1) for item in shown.split())["CUDA_VISIBLE_DEVICES"]


@pytest.fixture
def fake_gpus(agent: AgentCli, user_manager, tmp_path: Path) -> Iterator[Path]:  # noqa: ANN001
    """Three fake GPUs for the CLI and the daemon; the returned file takes "UUID XID" lines."""
    devices = tmp_path / "gpus.json"
    devices.write_text(json.dumps({"count": 3, "xid_file": "xids"}))
    agent.env["VLLM_AGENT_FAKE_GPUS"] = str(devices)
    dropin = user_manager.unit_dir / "vllm-agent.service.d"
    dropin.mkdir(exist_ok=True)
    (dropin / "fake-gpus.conf").write_text(f"[Service]\nEnvironment=VLLM_AGENT_FAKE_GPUS={devices}\n")
    user_manager.daemon_reload()
    yield tmp_path / "xids"
    user_manager.systemctl("stop", "vllm-agent.service", check=False)
    shutil.rmtree(dropin)
    user_manager.daemon_reload()


def test_an_injected_xid_79_quarantines_a_device_and_moves_or_stops_its_deployment_as_configured(
    agent: AgentCli,
    model_dir: Path,
    user_manager,  # noqa: ANN001
    fake_gpus: Path,
) -> None:
    env = f'[env]\nVLLM_AGENT_FAKE_GPUS = "{agent.env["VLLM_AGENT_FAKE_GPUS"]}"\n'
    engine = f'args = ["--fake-load-time", "0.2"]\ntests = []\ngpus = 1\n{env}'
    agent.write_deployment("mover", f'model = "{model_dir}"\non_gpu_failure = "move"\n{engine}')
    agent.write_deployment("stopper", f'model = "{model_dir}"\non_gpu_failure = "stop"\n{engine}')
    for name in ("mover", "stopper"):
        agent.ok("start", name)
    before = {name: visible_device(user_manager, name) for name in ("mover", "stopper")}
    assert before["mover"] != before["stopper"]
    user_manager.systemctl("start", "vllm-agent.service")
    # An Xid the driver raises before the watch registered goes nowhere (as in NVML): wait for it.
    wait_for("the daemon's Xid watch", lambda: "GPU Xid events watched" in agent.log("vllm-agent"))

    # move: the daemon restarts it, and placement gives it the one device that is left.
    with fake_gpus.open("a") as xids:
        xids.write(f"{before['mover']} 79\n")
    wait_for(
        "mover ready on another device",
        lambda: visible_device(user_manager, "mover") != before["mover"] and agent.status("mover")["state"] == "ready",
        timeout=60,
    )
    moved = visible_device(user_manager, "mover")
    assert moved != before["stopper"]
    assert agent.status("mover")["devices"][0]["uuid"] == moved

    # stop: the unit goes down, still wanted, with the reason.
    with fake_gpus.open("a") as xids:
        xids.write(f"{before['stopper']} 79\n")
    wait_for(
        "stopper stopped", lambda: user_manager.show("vllm@stopper.service", "ActiveState")["ActiveState"] == "inactive"
    )
    status = agent.status("stopper")
    assert (status["state"], status["desired"]) == ("stopped", "running"), status
    assert f"gpu-unhealthy: {before['stopper']}: Xid 79" in status["reason"], status
    assert f"gpu-unhealthy: {before['stopper']}: Xid 79" in agent.run("status", "stopper").stdout
    assert agent.status("mover")["state"] == "ready", "the moved one is untouched"

    report = json.loads(agent.ok("gpus", "--json").stdout)
    shown = {device["uuid"]: device for device in report["devices"]}
    for uuid in before.values():
        assert shown[uuid]["quarantined"] and shown[uuid]["quarantine"]["reason"] == "Xid 79", shown[uuid]
    assert not shown[moved]["quarantined"]

    # The release lifts the quarantine, and the daemon starts what the fault stopped.
    agent.ok("gpus", "--release", before["stopper"])
    report = json.loads(agent.ok("gpus", "--json").stdout)
    assert [d["uuid"] for d in report["devices"] if d["quarantined"]] == [before["mover"]]
    wait_for("stopper ready again", lambda: agent.status("stopper")["state"] == "ready", timeout=60)
    assert visible_device(user_manager, "stopper") == before["stopper"]
