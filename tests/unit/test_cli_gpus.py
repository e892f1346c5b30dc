"""`vllm-agent gpus`, `validate` and `render` with GPUs from the test plugin tests/plugins/fakegpu.

That plugin is a real distribution registered by entry point (scripts/setup installs it); it runs
the real nvml backend over the fake pynvml, with devices from $VLLM_AGENT_FAKE_GPUS. The agent's
own nvml and rocm plugins are blocked in agent.toml, so the result is the same on a GPU host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AGENT = [sys.executable, "-m", "vllm_agent"]
GiB = 1024**3
LIBRARY_NOT_FOUND = 12


def run(conf: Path, devices: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VLLM_AGENT_FAKE_GPUS": str(devices)}
    return subprocess.run(
        [*AGENT, "--config-dir", str(conf), *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    (conf / "models.d").mkdir(parents=True)
    (conf / "agent.toml").write_text(f'state_dir = "{tmp_path / "state"}"\n[plugins]\nblock = ["nvml", "rocm"]\n')
    (conf / "models.d" / "cpu.toml").write_text('model = "org/cpu-model"\nport = 8101\n')
    (conf / "models.d" / "big.toml").write_text('model = "org/big-model"\nport = 8102\ngpus = 1\n')
    (conf / "models.d" / "pinned.toml").write_text('model = "org/pinned"\nport = 8103\ngpus = [0]\n')
    return conf


def describe(path: Path, **description: object) -> Path:
    path.write_text(json.dumps(description))
    return path


def test_gpus_lists_each_device_with_memory_load_health_and_foreign_processes(
    conf: Path, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    devices = describe(
        tmp_path / "gpus.json",
        devices=[
            {"name": "NVIDIA A100-SXM4-40GB", "total": 40 * GiB, "used": 10 * GiB, "utilisation": 37,
             "temperature": 51, "power_draw": 250, "processes": [[sleeper.pid, 9 * GiB]]},
            {"ecc_volatile": 3},
        ],
    )  # fmt: skip
    done = run(conf, devices, "gpus")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "fakegpu:0  NVIDIA A100-SXM4-40GB  GPU-00000000-0000-0000-0000-000000000000"
    assert lines[1].split() == "memory 10.0/40.0 GiB util 37% 51 C 250/700 W health ok".split()
    assert lines[2] == f"  foreign: pid {sleeper.pid} sleep 60, 9.0 GiB"
    assert lines[3].startswith("fakegpu:1  NVIDIA H100 80GB HBM3")
    assert "health PROBLEM" in lines[4]
    assert lines[5] == "  problem: 3 uncorrectable ECC error(s) since the last reset"
    assert "nvml" not in done.stdout, "a blocked plugin is not shown"


def test_gpus_json_has_every_field_including_quarantine(
    conf: Path, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    devices = describe(tmp_path / "gpus.json", devices=[{"uuid": "GPU-a", "processes": [[sleeper.pid, None]]}])
    done = run(conf, devices, "gpus", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["backends"] == [{"name": "fakegpu", "available": True, "reason": None, "hint": None}]
    assert doc["error"] is None and doc["hint"] is None
    (device,) = doc["devices"]
    assert (device["uuid"], device["backend"], device["index"]) == ("GPU-a", "fakegpu", 0)
    assert device["memory"] == {"total": 80 * GiB, "used": GiB, "free": 79 * GiB}
    assert device["power"] == {"draw": 70.0, "limit": 700.0} and device["temperature"] == 35
    assert device["quarantined"] is False and device["health"]["ok"] is True
    assert device["deployments"] == []
    assert device["foreign"] == [{"pid": sleeper.pid, "used_memory": None, "command": "sleep 60"}]


def test_without_a_gpu_backend_gpus_says_why_and_exits_1(conf: Path, tmp_path: Path) -> None:
    devices = describe(tmp_path / "gpus.json", fail={"nvmlInit": LIBRARY_NOT_FOUND}, count=2)
    done = run(conf, devices, "gpus")
    assert done.returncode == 1
    assert done.stdout.startswith(
        "fakegpu unavailable: nvml: initialising NVML failed: the NVML library libnvidia-ml.so.1"
    )
    assert "error[gpu.error]: no GPU backend available: nvml: initialising NVML failed" in done.stderr
    assert "hint: install the NVIDIA driver" in done.stderr
    doc = json.loads(run(conf, devices, "gpus", "--json").stdout)
    assert doc["devices"] == [] and doc["error"].startswith("no GPU backend available: ")


def test_validate_names_each_deployment_that_wants_gpus_when_no_backend_works(conf: Path, tmp_path: Path) -> None:
    devices = describe(tmp_path / "gpus.json", fail={"nvmlInit": LIBRARY_NOT_FOUND})
    done = run(conf, devices, "validate", "--json")
    assert done.returncode == 2
    problems = json.loads(done.stdout)["problems"]
    reason = "gpus: no GPU backend available: nvml: initialising NVML failed: the NVML library libnvidia-ml.so.1"
    assert [p.split(" was not found")[0] for p in problems] == [
        f"models.d/big.toml: {reason}",
        f"models.d/pinned.toml: {reason}",
    ], "the CPU-only deployment is fine"
    assert all(p.isprintable() for p in problems)


def test_validate_passes_when_a_backend_works(conf: Path, tmp_path: Path) -> None:
    done = run(conf, describe(tmp_path / "gpus.json", count=1), "validate")
    assert done.returncode == 0, done.stderr


def test_render_of_a_gpu_deployment_fails_in_one_line_and_a_cpu_one_renders(conf: Path, tmp_path: Path) -> None:
    broken = describe(tmp_path / "gpus.json", fail={"nvmlInit": LIBRARY_NOT_FOUND})
    done = run(conf, broken, "render", "big")
    assert done.returncode == 1
    assert done.stderr.startswith("error[gpu.error]: no GPU backend available: nvml: initialising NVML failed")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert run(conf, broken, "render", "cpu").returncode == 0
    working = describe(tmp_path / "ok.json", devices=[{"used": 70 * GiB}, {"used": 0}])
    rendered = run(conf, working, "render", "big")
    assert rendered.returncode == 0, rendered.stderr
    # The device with the most free memory, pinned by UUID in PCI bus order.
    assert "Environment=CUDA_VISIBLE_DEVICES=GPU-00000000-0000-0000-0000-000000000001" in rendered.stdout
    assert "Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID" in rendered.stdout
