"""Who runs on a GPU (from /proc), the per-device metrics and their 5-second cache."""

from __future__ import annotations

import sys
from pathlib import Path

import pynvml
from vllm_agent.gpu.command import report
from vllm_agent.gpu.metrics import GpuSampler
from vllm_agent.gpu.owners import owner_of
from vllm_agent.plugin_api import XidEvent
from vllm_agent_plugins.gpu_nvml import NvmlBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, home of the fakes package
from vllm_agent.testing.pynvml_fake import FakeGpu, FakeNvml  # noqa: E402

GiB = 1024**3
V2_UNIT = "0::/user.slice/user-0.slice/user@0.service/app.slice/vllm@qwen-7b.service\n"
V1_UNIT = "12:pids:/system.slice/vllm@llama.service\n1:name=systemd:/system.slice/vllm@llama.service/engine\n"


def fake_proc(root: Path, pid: int, cgroup: str, cmdline: bytes) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "cgroup").write_text(cgroup)
    (root / str(pid) / "cmdline").write_bytes(cmdline)


def test_a_process_in_a_vllm_unit_cgroup_belongs_to_that_deployment(tmp_path: Path) -> None:
    fake_proc(tmp_path, 10, V2_UNIT, b"python3\0-m\0vllm.entrypoints.openai.api_server\0")
    fake_proc(tmp_path, 11, V1_UNIT, b"VLLM::EngineCore\0")
    fake_proc(tmp_path, 12, "0::/user.slice/user-0.slice/session-3.scope\n", b"python\0train.py\0")
    fake_proc(tmp_path, 13, "0::/system.slice/vllm-agent.service\n", b"vllm-agent\0run\0")
    assert owner_of(10, tmp_path).deployment == "qwen-7b"
    assert owner_of(11, tmp_path).deployment == "llama", "cgroup v1 lines too, and a sub-cgroup of the unit"
    assert (owner_of(12, tmp_path).deployment, owner_of(12, tmp_path).command) == (None, "python train.py")
    assert owner_of(13, tmp_path).deployment is None, "the agent's own unit is not a deployment"


def test_a_gone_or_hidden_process_is_foreign_with_an_unknown_command(tmp_path: Path) -> None:
    owner = owner_of(4242, tmp_path)
    assert (owner.deployment, owner.command) == (None, "?")


def test_a_long_or_odd_command_line_is_cut_and_made_printable(tmp_path: Path) -> None:
    fake_proc(tmp_path, 20, "0::/\n", b"python\0" + b"x" * 500 + b"\n\0")
    command = owner_of(20, tmp_path).command
    assert len(command) == 120 and command.endswith("...") and command.isprintable()


def test_the_report_splits_deployments_from_foreign_processes(tmp_path: Path) -> None:
    fake_proc(tmp_path, 10, V2_UNIT, b"python3\0-m\0vllm\0")
    fake_proc(tmp_path, 12, "0::/init.scope\n", b"python\0train.py\0")
    fake = FakeNvml([FakeGpu(processes=[(10, 30 * GiB), (12, 2 * GiB)])])
    (device,) = report({"nvml": NvmlBackend(fake)}, proc=tmp_path)["devices"]
    assert device["deployments"] == [
        {"name": "qwen-7b", "pid": 10, "used_memory": 30 * GiB, "command": "python3 -m vllm"}
    ]
    assert device["foreign"] == [{"pid": 12, "used_memory": 2 * GiB, "command": "python train.py"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_sampler_reads_the_devices_at_most_every_5_seconds() -> None:
    fake, clock = FakeNvml([FakeGpu(used=GiB)]), Clock()
    sampler = GpuSampler(lambda: {"nvml": NvmlBackend(fake)}, clock=clock)
    assert "vllm_agent_gpu_memory_used_bytes{" in sampler.metrics()
    fake.gpus[0].used = 5 * GiB
    clock.now += 4.9
    assert f"{GiB}\n" in sampler.metrics() and sampler.reads == 1, "cached within 5 s"
    clock.now += 0.2
    assert f"{5 * GiB}\n" in sampler.metrics() and sampler.reads == 2


def test_metrics_have_every_figure_per_device_and_leave_out_unknowns() -> None:
    gpus = [
        FakeGpu(uuid="GPU-a", used=3 * GiB, utilisation=40, temperature=61, power_draw=300.5, ecc_aggregate=2),
        FakeGpu(uuid="GPU-b", fail={"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_NOT_SUPPORTED}, ecc_volatile=1),
    ]
    sampler = GpuSampler(lambda: {"nvml": NvmlBackend(FakeNvml(gpus))}, quarantined=lambda: {"GPU-b"})
    sampler.note_xids([XidEvent("GPU-b", 79), XidEvent("GPU-b", 79)])
    text = sampler.metrics()
    a, b = 'backend="nvml",index="0",uuid="GPU-a"', 'backend="nvml",index="1",uuid="GPU-b"'
    for line in [
        'vllm_agent_gpu_backend_up{backend="nvml"} 1',
        f"vllm_agent_gpu_memory_used_bytes{{{a}}} {3 * GiB}",
        f"vllm_agent_gpu_memory_total_bytes{{{a}}} {80 * GiB}",
        f"vllm_agent_gpu_utilization_ratio{{{a}}} 0.4",
        f"vllm_agent_gpu_temperature_celsius{{{a}}} 61",
        f"vllm_agent_gpu_power_watts{{{a}}} 300.5",
        f"vllm_agent_gpu_power_limit_watts{{{a}}} 700",
        f'vllm_agent_gpu_ecc_uncorrected_errors{{{a},counter="aggregate"}} 2',
        f'vllm_agent_gpu_ecc_uncorrected_errors{{{b},counter="volatile"}} 1',
        f"vllm_agent_gpu_healthy{{{a}}} 1",
        f"vllm_agent_gpu_healthy{{{b}}} 0",
        f"vllm_agent_gpu_xid_events_total{{{a}}} 0",
        f"vllm_agent_gpu_xid_events_total{{{b}}} 2",
        f"vllm_agent_gpu_quarantined{{{a}}} 0",
        f"vllm_agent_gpu_quarantined{{{b}}} 1",
    ]:
        assert line in text.splitlines(), line
    assert f"vllm_agent_gpu_temperature_celsius{{{b}}}" not in text, "unknown is left out, not 0"


def test_an_unavailable_backend_is_probed_once_and_shows_as_down() -> None:
    fake, clock = FakeNvml(1, fail={"nvmlInit": pynvml.NVML_ERROR_DRIVER_NOT_LOADED}), Clock()
    backend = NvmlBackend(fake)
    sampler = GpuSampler(lambda: {"nvml": backend}, clock=clock)
    for _ in range(3):
        assert 'vllm_agent_gpu_backend_up{backend="nvml"} 0' in sampler.metrics()
        clock.now += 10
    assert sampler.reads == 3 and fake.calls == ["nvmlInit"], "the reason is remembered, the library left alone"
