"""Placement: free devices by free memory, never one device twice, sharing only when named.

The GPUs come from the test plugin tests/plugins/fakegpu (the real nvml backend over the fake
pynvml, devices from $VLLM_AGENT_FAKE_GPUS); the agent's own nvml and rocm plugins are blocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from vllm_agent import hookimpl
from vllm_agent.cli.validate import problems_in
from vllm_agent.config.desired import STOPPED, DesiredStates
from vllm_agent.config.directory import load_config
from vllm_agent.deployments.lifecycle import Deployments
from vllm_agent.deployments.status import one_line
from vllm_agent.errors import GpuError
from vllm_agent.gpu.devnodes import device_allow
from vllm_agent.gpu.placement import PlacementRecords, Placer
from vllm_agent.gpu.quarantine import quarantine
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.systemd.model import UnitState

GiB = 1024**3


def uuid(index: int) -> str:
    return f"GPU-00000000-0000-0000-0000-{index:012d}"


def mig_uuid(gpu: int, slot: int) -> str:
    return f"MIG-00000000-0000-0000-{gpu:04d}-{slot:012d}"


class Host:
    """A config directory and a host with fake GPUs; ``place(name)`` as `vllm-agent start` does."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.conf = tmp_path / "conf"
        (self.conf / "models.d").mkdir(parents=True)
        self.state = tmp_path / "state"
        (self.conf / "agent.toml").write_text(
            f'state_dir = "{self.state}"\nunit_dir = "{tmp_path / "units"}"\n[plugins]\nblock = ["nvml", "rocm"]\n'
        )
        self.gpus_file = tmp_path / "gpus.json"
        monkeypatch.setenv("VLLM_AGENT_FAKE_GPUS", str(self.gpus_file))
        self.devices(count=4)

    def devices(self, **description: object) -> None:
        self.gpus_file.write_text(json.dumps(description))

    def deploy(self, name: str, text: str = "gpus = 1\n") -> None:
        (self.conf / "models.d" / f"{name}.toml").write_text(f'model = "org/{name}"\n' + text)

    def config(self):  # noqa: ANN201 - Config
        return load_config(self.conf, user=True)

    def placer(self) -> Placer:
        config = self.config()
        return Placer(config, make_plugin_manager(config.settings))

    def place(self, name: str) -> list[str]:
        placer = self.placer()
        return [slot.uuid for slot in placer.place(placer.config.deployment(name)) or []]

    def desired(self) -> DesiredStates:
        config = self.config()
        return DesiredStates(config.state_dir, config.unit_dir, user=True)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    return Host(tmp_path, monkeypatch)


def test_a_count_takes_the_devices_with_the_most_free_memory(host: Host) -> None:
    host.devices(devices=[{"used": 60 * GiB}, {"used": 5 * GiB}, {"used": 40 * GiB}, {"used": 1 * GiB}])
    host.deploy("a", "gpus = 2\n")
    assert host.place("a") == [uuid(1), uuid(3)]


def test_no_device_is_handed_out_twice_across_deployments(host: Host) -> None:
    # GPU 0 has the most free memory by far: without seeing the others, every one would get it.
    host.devices(devices=[{"used": 0}, {"used": 30 * GiB}, {"used": 40 * GiB}, {"used": 50 * GiB}])
    for name in "abcd":
        host.deploy(name)
    placed = [host.place(name)[0] for name in "abcd"]
    assert placed == [uuid(0), uuid(1), uuid(2), uuid(3)]
    host.deploy("e")
    with pytest.raises(GpuError) as caught:
        host.place("e")
    assert caught.value.message.startswith("deployment e wants 1 GPU; 0 of 4 free on this host (GPU 0: deployment a;")


def test_placement_is_sticky_across_restarts(host: Host) -> None:
    host.deploy("a")
    first = host.place("a")
    assert first == [uuid(0)]
    host.devices(devices=[{"used": 70 * GiB}, {"used": 0}])  # a's engine filled its device
    assert host.place("a") == first, "a restart keeps its device"


def test_a_stopped_deployment_frees_its_devices(host: Host) -> None:
    host.devices(count=1)
    host.deploy("a")
    host.deploy("b")
    assert host.place("a") == [uuid(0)]
    with pytest.raises(GpuError, match="GPU 0: deployment a"):
        host.place("b")
    host.desired().set("a", STOPPED)
    assert host.place("b") == [uuid(0)]
    host.desired().set("a", "running")
    with pytest.raises(GpuError, match="GPU 0: deployment b"):
        host.place("a")


def test_a_removed_deployment_frees_its_devices(host: Host) -> None:
    host.devices(count=1)
    host.deploy("a")
    host.deploy("b")
    host.place("a")
    (host.conf / "models.d" / "a.toml").unlink()
    assert host.place("b") == [uuid(0)]


PLACE = """\
import sys, time
from pathlib import Path
from vllm_agent.config.directory import load_config
from vllm_agent.gpu.devnodes import device_allow
from vllm_agent.gpu.placement import Placer
from vllm_agent.pluginhost.manager import make_plugin_manager
conf, name, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
config = load_config(conf, user=True)
placer = Placer(config, make_plugin_manager(config.settings))
placer.slots()  # load the libraries first: the race is in the decision, not in imports
while not go.exists():
    time.sleep(0.001)
print(placer.place(config.deployment(name))[0].uuid)
"""


def test_concurrent_starts_never_share_a_device(host: Host, tmp_path: Path) -> None:
    names = [f"d{i}" for i in range(4)]
    for name in names:
        host.deploy(name)
    script, go = tmp_path / "place.py", tmp_path / "go"
    script.write_text(PLACE)
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(host.conf), name, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ,
        )
        for name in names
    ]
    time.sleep(2)  # every process loaded and waiting on the same signal
    go.touch()
    results = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), results
    chosen = [out.strip() for out, _ in results]
    assert sorted(chosen) == [uuid(i) for i in range(4)], chosen
    recorded = PlacementRecords(host.state).all()
    assert sorted(recorded[name][0].uuid for name in names) == sorted(chosen)


def test_a_named_device_is_shared_only_while_the_claims_sum_to_at_most_1(host: Host) -> None:
    host.deploy("a", "gpus = [0]\ngpu_memory_utilization = 0.3\n")
    host.deploy("b", f'gpus = ["{uuid(0)}"]\ngpu_memory_utilization = 0.7\n')
    host.deploy("c", "gpus = [0]\ngpu_memory_utilization = 0.2\n")
    assert host.place("a") == [uuid(0)]
    assert host.place("b") == [uuid(0)], "0.3 + 0.7 fits"
    with pytest.raises(GpuError) as caught:
        host.place("c")
    assert caught.value.message == (
        f"models.d/c.toml: gpus: GPU 0 ({uuid(0)}) is shared with a, b: gpu_memory_utilization sums to 1.2 "
        "(a 0.3 + b 0.7 + this 0.2), must be at most 1"
    )
    host.deploy("n", "gpus = 3\n")
    assert host.place("n") == [uuid(1), uuid(2), uuid(3)], "a count never lands on a named device"


def test_validate_checks_the_sharing_sum_and_that_named_devices_exist(host: Host) -> None:
    host.deploy("a", "gpus = [0]\n")  # vLLM's default claim: 0.9
    host.deploy("b", "gpus = [0]\ngpu_memory_utilization = 0.5\n")
    host.deploy("c", "gpus = [7]\n")
    host.deploy("ok", "gpus = [1, 2]\ntensor_parallel_size = 2\n")
    problems = problems_in(host.conf, user=True)
    assert problems[0].startswith("models.d/c.toml: gpus: no device 7 on this host (devices: 0 GPU-")
    assert problems[1:] == [
        f"models.d/a.toml: gpus: GPU 0 ({uuid(0)}) is shared with b: gpu_memory_utilization sums to 1.4 "
        "(b 0.5 + this 0.9), must be at most 1",
        f"models.d/b.toml: gpus: GPU 0 ({uuid(0)}) is shared with a: gpu_memory_utilization sums to 1.4 "
        "(a 0.9 + this 0.5), must be at most 1",
    ]


def test_gpus_must_agree_with_tensor_times_pipeline_parallel_size(host: Host) -> None:
    host.deploy("tp", "gpus = 2\ntensor_parallel_size = 2\npipeline_parallel_size = 2\n")
    host.deploy("listed", "gpus = [0, 1, 2, 3]\ntensor_parallel_size = 2\npipeline_parallel_size = 2\n")
    assert problems_in(host.conf, user=True) == [
        "models.d/tp.toml: gpus: 2 GPU(s) do not match tensor_parallel_size x pipeline_parallel_size = 2 x 2 = 4"
    ]


def test_mig_instances_are_devices_of_their_own(host: Host) -> None:
    host.devices(
        devices=[
            {"mig": [{"slot": 1, "total": 20 * GiB}, {"slot": 2, "total": 10 * GiB}]},
            {"used": 70 * GiB},
        ]
    )
    host.deploy("small")
    host.deploy("pair", "gpus = 2\n")
    assert host.place("small") == [mig_uuid(0, 1)], "the MIG instance with the most free memory"
    with pytest.raises(GpuError) as caught:
        host.place("pair")
    assert "GPU 0/mig2: a MIG instance (one engine can use only one)" in caught.value.message
    host.deploy("named", f'gpus = ["{mig_uuid(0, 2)}"]\n')
    placer = host.placer()
    deployments = Deployments(placer.config, None, placer.plugins)  # type: ignore[arg-type]
    text = deployments.render("named", write_port=False).text
    assert f"Environment=CUDA_VISIBLE_DEVICES={mig_uuid(0, 2)}" in text
    host.deploy("whole", "gpus = [0]\n")
    with pytest.raises(GpuError, match="GPU 0 is in MIG mode; name one of its MIG instances"):
        host.place("whole")


def test_a_quarantined_or_sick_device_gets_no_new_work(host: Host) -> None:
    host.devices(devices=[{}, {}, {"ecc_volatile": 2}, {}])
    host.deploy("a")
    assert host.place("a") == [uuid(0)]
    assert quarantine(host.state, uuid(0), "Xid 79: fell off the bus") == ["a"]
    assert host.place("a") == [uuid(1)], "moved off the quarantined device on its next start"
    host.deploy("b", "gpus = 2\n")
    with pytest.raises(GpuError) as caught:
        host.place("b")
    message = caught.value.message
    assert "GPU 0: quarantined (Xid 79: fell off the bus)" in message
    assert "GPU 2: unhealthy (2 uncorrectable ECC error(s) since the last reset)" in message
    host.deploy("named", "gpus = [0]\ngpu_memory_utilization = 0.05\n")
    with pytest.raises(GpuError, match=r"GPU 0 \(GPU-.*\) is quarantined: Xid 79"):
        host.place("named")


def test_the_decision_is_in_the_unit_and_in_status(host: Host) -> None:
    host.devices(devices=[{"used": 70 * GiB}, {}, {}])
    host.deploy("a", "gpus = 2\nport = 8100\n")
    placer = host.placer()
    deployments = Deployments(placer.config, None, placer.plugins)  # type: ignore[arg-type]
    text = deployments.prepare("a").rendered.text
    assert "Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID\n" in text
    assert f"Environment=CUDA_VISIBLE_DEVICES={uuid(1)},{uuid(2)}\n" in text
    unit = UnitState("vllm@a.service", "loaded", "active", "running", "success", 0, 42, 0, 0, "", "", 0, 0)
    status = deployments.status_of(placer.config.deployment("a"), unit)
    assert status.gpus == ["1", "2"]
    assert [(d["index"], d["uuid"], d["name"]) for d in status.devices] == [
        (1, uuid(1), "NVIDIA H100 80GB HBM3"),
        (2, uuid(2), "NVIDIA H100 80GB HBM3"),
    ]
    assert "  gpu 1,2" in one_line(status)


class Sandbox:
    """A site plugin that closes /dev for every unit."""

    @hookimpl
    def agent_unit_directives(self, deployment, settings):  # noqa: ANN001, ANN201
        return {"Service": ["DevicePolicy=closed"]}


def test_a_sandboxed_unit_is_granted_exactly_its_devices_nodes(host: Host, tmp_path: Path) -> None:
    host.deploy("a", "gpus = 1\nport = 8100\n")
    config = host.config()
    plain = Deployments(config, None, make_plugin_manager(config.settings))  # type: ignore[arg-type]
    assert "DeviceAllow=" not in plain.render("a", write_port=False).text, "no sandbox: nothing to grant"
    sandboxed = make_plugin_manager(config.settings, extra=[("sandbox", Sandbox())])
    closed = Deployments(config, None, sandboxed)  # type: ignore[arg-type]
    text = closed.render("a", write_port=False).text
    assert "DeviceAllow=/dev/nvidiactl rw\nDeviceAllow=/dev/nvidia-uvm rw\n" in text
    # The GPU's own node comes from the driver's entry for its PCI address.
    proc = tmp_path / "proc"
    (proc / "driver/nvidia/gpus/0000:18:00.0").mkdir(parents=True)
    (proc / "driver/nvidia/gpus/0000:18:00.0/information").write_text("Model: H100\nDevice Minor: 5\n")
    slots = Placer(config, make_plugin_manager(config.settings)).slots()
    assert device_allow(slots[:1], proc=proc) == [
        "/dev/nvidiactl rw",
        "/dev/nvidia-uvm rw",
        "/dev/nvidia-uvm-tools rw",
        "/dev/nvidia5 rw",
    ]
    amd = replace(slots[0], vendor="amd", pci_bus_id="0000:c1:00.0")
    drm = tmp_path / "sys/bus/pci/devices/0000:c1:00.0/drm"
    (drm / "renderD129").mkdir(parents=True)
    assert device_allow([amd], sys=tmp_path / "sys") == ["/dev/kfd rw", "/dev/dri/renderD129 rw"]
