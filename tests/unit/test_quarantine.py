"""Quarantine: a sick device gets no new work until released; the store outlives the agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from vllm_agent.config.directory import deployment_from_data
from vllm_agent.config.schema import AgentSettings, Deployment
from vllm_agent.errors import ConfigError
from vllm_agent.gpu.quarantine import (
    APPLICATION_XIDS,
    GpuFailureAction,
    QuarantineStore,
    decide_on_gpu_failure,
    device_fault,
    new_problem,
    quarantine,
)
from vllm_agent.plugin_api import DeviceHealth

AGENT = [sys.executable, "-m", "vllm_agent"]
UUID0, UUID1 = "GPU-00000000-0000-0000-0000-000000000000", "GPU-00000000-0000-0000-0000-000000000001"


def test_application_xids_are_the_engines_problem_the_rest_the_devices() -> None:
    assert sorted(APPLICATION_XIDS) == [13, 31, 43, 45, 68, 109]
    assert [xid for xid in (13, 31, 43, 45, 68, 109) if device_fault(xid)] == []
    assert all(device_fault(xid) for xid in (48, 63, 64, 74, 79, 92, 94, 95, 119, 120))


def test_a_lost_device_and_new_ecc_errors_are_new_problems_old_ones_are_not() -> None:
    assert new_problem(DeviceHealth(), DeviceHealth(error="GPU is lost")) == "cannot be read: GPU is lost"
    assert new_problem(DeviceHealth(error="GPU is lost"), DeviceHealth(error="GPU is lost")) is None
    assert new_problem(DeviceHealth(ecc_uncorrected_volatile=1), DeviceHealth(ecc_uncorrected_volatile=3)) == (
        "2 new uncorrectable ECC error(s)"
    )
    assert new_problem(DeviceHealth(ecc_uncorrected_volatile=3), DeviceHealth(ecc_uncorrected_volatile=3)) is None


def test_quarantine_returns_the_deployments_on_the_device_and_persists(tmp_path: Path) -> None:
    (tmp_path / "placement.json").write_text(
        json.dumps(
            {
                "a": {"devices": [{"index": 0, "uuid": UUID0, "name": "H100", "backend": "nvml", "vendor": "nvidia",
                                   "parent": UUID0}]},
                "b": {"devices": [{"index": 1, "uuid": "MIG-x", "name": "H100 MIG 1", "backend": "nvml",
                                   "vendor": "nvidia", "mig": 1, "parent": UUID1}]},
            }
        )
    )  # fmt: skip
    assert quarantine(tmp_path, UUID0, "Xid 79") == ["a"]
    assert quarantine(tmp_path, UUID1, "lost") == ["b"], "a GPU's MIG instances go with it"
    store = QuarantineStore(tmp_path)  # a new reader: what a restarted agent sees
    assert store.uuids() == {UUID0, UUID1} and store.all()[UUID0]["reason"] == "Xid 79"
    assert store.release(UUID0) and not store.release(UUID0)


def test_on_gpu_failure_decides_per_deployment_and_named_devices_cannot_move() -> None:
    deployments = {
        "stopper": Deployment(name="stopper", model="org/a", gpus=1),
        "keeper": Deployment(name="keeper", model="org/a", gpus=1, on_gpu_failure="keep"),
        "mover": Deployment(name="mover", model="org/a", gpus=1, on_gpu_failure="move"),
        "pinned": Deployment(name="pinned", model="org/a", gpus=[0], on_gpu_failure="move"),
    }
    actions = decide_on_gpu_failure(deployments, ["keeper", "mover", "pinned", "stopper", "gone"], UUID0, "Xid 79")
    assert [(a.deployment, a.action) for a in actions] == [
        ("keeper", "keep"),
        ("mover", "move"),
        ("pinned", "stop"),
        ("stopper", "stop"),
    ]
    assert actions[0] == GpuFailureAction("keeper", "keep", f"gpu-unhealthy: {UUID0}: Xid 79")
    assert actions[2].reason.endswith("(not moved: its gpus are named in models.d/pinned.toml)")


def test_on_gpu_failure_is_validated() -> None:
    with pytest.raises(ConfigError, match="models.d/x.toml: on_gpu_failure: must be one of 'stop', 'keep' or 'move'"):
        deployment_from_data("x", {"model": "org/a", "on_gpu_failure": "explode"}, AgentSettings())


def run(conf: Path, devices: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VLLM_AGENT_FAKE_GPUS": str(devices)}
    return subprocess.run([*AGENT, "--config-dir", str(conf), *args], capture_output=True, text=True, env=env)


def test_gpus_shows_the_quarantine_and_release_lifts_it(tmp_path: Path) -> None:
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "models.d").mkdir(parents=True)
    (conf / "agent.toml").write_text(f'state_dir = "{state}"\n[plugins]\nblock = ["nvml", "rocm"]\n')
    devices = tmp_path / "gpus.json"
    devices.write_text(json.dumps({"count": 2}))
    quarantine(state, UUID1, "Xid 79: fell off the bus")
    shown = run(conf, devices, "gpus")
    assert "  quarantined: Xid 79: fell off the bus; 'vllm-agent gpus --release 1' lifts it" in shown.stdout
    doc = json.loads(run(conf, devices, "gpus", "--json").stdout)
    assert [d["quarantined"] for d in doc["devices"]] == [False, True]
    assert doc["devices"][1]["quarantine"]["reason"] == "Xid 79: fell off the bus"
    refused = run(conf, devices, "gpus", "--release", "0")
    assert refused.returncode == 1 and f"GPU 0 is not quarantined (quarantined: {UUID1})" in refused.stderr
    done = run(conf, devices, "gpus", "--release", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"released GPU 1 ({UUID1}): it takes new deployments again\n"
    assert QuarantineStore(state).uuids() == frozenset()
    assert "quarantined" not in run(conf, devices, "gpus").stdout


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b'{"truncated": ', b"[1, 2]"])
def test_damaged_quarantine_and_placement_files_are_moved_aside_and_rebuilt(tmp_path: Path, content: bytes) -> None:
    from vllm_agent.gpu.records import PlacementRecords

    for store, path in (
        (QuarantineStore(tmp_path), tmp_path / "gpu-quarantine.json"),
        (PlacementRecords(tmp_path), tmp_path / "placement.json"),
    ):
        path.write_bytes(content)
        assert (store.all() if isinstance(store, QuarantineStore) else store.load()) == {}
        assert not path.exists()
        (aside,) = tmp_path.glob(f"{path.name}.corrupt-*")
        assert aside.read_bytes() == content  # kept for a person to look at
        aside.unlink()
