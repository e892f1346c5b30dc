"""GPU placement end to end: real units under the real user manager on a fake GPU host.

The GPUs come from the test plugin tests/plugins/fakegpu (the real nvml backend over the fake
pynvml), which both the CLI and each unit's launcher load by entry point; they find the device
file through $VLLM_AGENT_FAKE_GPUS, which the units get from the deployment's `env` table.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.agent_cli import AgentCli

GiB = 1024**3
FREE = ("0", "1", "2")


def uuid(index: int | str) -> str:
    return f"GPU-00000000-0000-0000-0000-{int(index):012d}"


@pytest.fixture
def hog() -> Iterator[subprocess.Popen[bytes]]:
    """A process outside any unit, holding most of GPU 3 (as far as the fake driver says)."""
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()


def environment(user_manager, name: str) -> dict[str, str]:  # noqa: ANN001 - harness fixture
    shown = user_manager.show(f"vllm@{name}.service", "Environment")["Environment"]
    return dict(item.split("=", 1) for item in shown.split())


def test_three_deployments_get_three_devices_and_a_fourth_fails_at_once_on_memory(
    agent: AgentCli,
    model_dir: Path,
    user_manager,
    hog: subprocess.Popen[bytes],
    tmp_path: Path,  # noqa: ANN001
) -> None:
    devices = tmp_path / "gpus.json"
    devices.write_text(json.dumps({"devices": [{}, {}, {}, {"used": 72 * GiB, "processes": [[hog.pid, 71 * GiB]]}]}))
    agent.env["VLLM_AGENT_FAKE_GPUS"] = str(devices)
    env = f'[env]\nVLLM_AGENT_FAKE_GPUS = "{devices}"\n'
    for name in ("a", "b", "c", "d"):
        agent.write_deployment(name, f'model = "{model_dir}"\ngpus = 1\ntests = []\n{env}')

    placed = {}
    for name in ("a", "b", "c"):
        agent.ok("start", name)
        pinned = environment(user_manager, name)
        assert pinned["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        placed[name] = pinned["CUDA_VISIBLE_DEVICES"]
        status = agent.status(name)
        assert status["state"] == "ready", status
        (device,) = status["devices"]
        assert (uuid(device["index"]), device["uuid"]) == (placed[name], placed[name])
        assert device["name"] == "NVIDIA H100 80GB HBM3"
        cat = user_manager.systemctl("cat", f"vllm@{name}.service").stdout
        assert f"Environment=CUDA_VISIBLE_DEVICES={placed[name]}" in cat
        line = agent.run("status", name).stdout
        assert f"  gpu {device['index']}" in line, line
    assert sorted(placed.values()) == [uuid(index) for index in FREE], "three different devices, by UUID"

    # The engine itself runs with the UUID: read it from the process, not only from systemd.
    engine = agent.status("a")["pid"]
    environ = Path(f"/proc/{engine}/environ").read_bytes().split(b"\0")
    assert f"CUDA_VISIBLE_DEVICES={placed['a']}".encode() in environ

    # The fourth gets the only device left, which a foreign process fills: exit 78 at once.
    done = agent.run("start", "d")
    assert done.returncode != 0
    status = agent.status("d")
    assert status["state"] == "failed", status
    assert status["reason"] == (
        f"not enough free GPU memory: GPU 3 ({uuid(3)}): 8.0 GiB free, 72.0 GiB needed "
        f"(gpu_memory_utilization 0.9 x 80.0 GiB); held by pid {hog.pid} sleep 600 (71.0 GiB)"
    ), done.stderr
    assert "not enough free GPU memory" in done.stderr
    shown = user_manager.show("vllm@d.service", "NRestarts", "ExecMainStatus", "Result")
    assert (shown["NRestarts"], shown["ExecMainStatus"]) == ("0", "78"), shown
    # A foreign holder will not let go: no waiting (wait_for_memory is the default 30 s).
    recorded = json.loads((agent.state_dir / "deployments" / "d.json").read_text())
    assert recorded["since"] - recorded["started_at"] < 30, recorded
    for name in ("a", "b", "c"):
        assert agent.status(name)["state"] == "ready", "the others are untouched"
