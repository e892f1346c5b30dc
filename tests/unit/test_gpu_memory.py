"""The launcher's pre-start check: not enough GPU memory fails at once (exit 78) naming who holds
it; memory a stopping engine still holds is waited for, with progress."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from harness.agent_cli import write_tiny_model_dir
from harness.fake_engine import SCRIPT
from harness.ports import agent_port
from vllm_agent import hookimpl
from vllm_agent.config.directory import load_one
from vllm_agent.deployments.state import StateStore
from vllm_agent.gpu.memory import shortfalls, wait_for_memory
from vllm_agent.gpu.owners import ProcessOwner
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.render.dropin import EXIT_CONFIG
from vllm_agent.render.engine_command import engine_argv
from vllm_agent.unit.launcher import Launcher
from vllm_agent.unit.notify import Notifier
from vllm_agent_plugins.gpu_nvml import NvmlBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, home of the fakes package
from vllm_agent.testing.pynvml_fake import FakeGpu, FakeMig, FakeNvml  # noqa: E402

GiB = 1024**3
UUID0 = "GPU-00000000-0000-0000-0000-000000000000"


class Gpus:
    """A site plugin offering the real nvml backend over a fake library."""

    def __init__(self, nvml: FakeNvml) -> None:
        self.backend = NvmlBackend(nvml, name="testgpu")

    @hookimpl
    def agent_gpu_backends(self, settings):  # noqa: ANN001, ANN201
        return [self.backend]


def owners(table: dict[int, ProcessOwner]):  # noqa: ANN201
    return lambda pid: table.get(pid, ProcessOwner(pid, None, "?"))


def test_a_short_device_names_free_needed_and_each_holder() -> None:
    nvml = FakeNvml([FakeGpu(used=60 * GiB, processes=[(100, 40 * GiB), (200, 19 * GiB)])])
    snapshots = NvmlBackend(nvml).snapshot()
    table = {100: ProcessOwner(100, None, "python train.py"), 200: ProcessOwner(200, "chat", "vllm serve")}
    short = shortfalls(snapshots, [UUID0], 0.5, me="m", owner=owners(table), wanted=lambda name: True)
    assert [item.describe() for item in short] == [
        f"GPU 0 ({UUID0}): 20.0 GiB free, 40.0 GiB needed (gpu_memory_utilization 0.5 x 80.0 GiB); "
        "held by pid 100 python train.py (40.0 GiB), deployment chat (pid 200, 19.0 GiB)"
    ]
    assert not short[0].may_be_released, "a foreign process and a wanted deployment do not let go"
    assert shortfalls(snapshots, [UUID0], 0.25, me="m", owner=owners(table), wanted=lambda name: True) == []


def test_memory_of_a_stopping_or_vanished_engine_may_be_released() -> None:
    nvml = FakeNvml([FakeGpu(used=60 * GiB, processes=[(200, 59 * GiB)])])
    snapshots = NvmlBackend(nvml).snapshot()

    def check(owner: ProcessOwner, wanted: bool) -> bool:
        found = shortfalls(snapshots, [UUID0], 0.9, me="m", owner=lambda pid: owner, wanted=lambda name: wanted)
        return found[0].may_be_released

    assert check(ProcessOwner(200, "m", "vllm serve"), wanted=True), "this deployment's previous engine"
    assert check(ProcessOwner(200, "old", "vllm serve"), wanted=False), "a deployment being stopped"
    assert check(ProcessOwner(200, None, "?"), wanted=True), "a process already gone"
    assert not check(ProcessOwner(200, "other", "vllm serve"), wanted=True)


def test_a_mig_instance_is_checked_against_its_own_memory() -> None:
    nvml = FakeNvml([FakeGpu(mig=[FakeMig(slot=1, total=20 * GiB, used=15 * GiB)])])
    mig = "MIG-00000000-0000-0000-0000-000000000001"
    (short,) = shortfalls(NvmlBackend(nvml).snapshot(), [mig], 0.9, me="m", owner=owners({}), wanted=lambda name: True)
    assert (short.label, short.free, short.needed) == ("0/mig1", 5 * GiB, 18 * GiB)


async def test_waiting_sees_memory_released_late_and_shows_progress() -> None:
    gpu = FakeGpu(used=70 * GiB, processes=[])  # a killed engine's memory, not yet freed by the driver
    backend = NvmlBackend(FakeNvml([gpu]))
    lines: list[str] = []

    def read():  # noqa: ANN202
        return shortfalls(backend.snapshot(), [UUID0], 0.9, me="m", owner=owners({}), wanted=lambda name: True)

    def progress(text: str) -> None:
        lines.append(text)
        if len(lines) == 3:
            gpu.used = GiB  # released

    assert await wait_for_memory(read, 30, progress, poll=0.05) == []
    assert lines[0] == "waiting for GPU memory (0/30s): GPU 0 has 10.0 GiB free, needs 72.0 GiB"
    assert len(lines) == 3


async def test_waiting_gives_up_after_wait_for_memory() -> None:
    backend = NvmlBackend(FakeNvml([FakeGpu(used=70 * GiB, processes=[])]))

    def read():  # noqa: ANN202
        return shortfalls(backend.snapshot(), [UUID0], 0.9, me="m", owner=owners({}), wanted=lambda name: True)

    lines: list[str] = []
    short = await wait_for_memory(read, 0.3, lines.append, poll=0.05)
    assert short and lines, "it waited, then returned what is still short"


def write_config(tmp_path: Path, started: Path, extra: str = "") -> Path:
    """A deployment ``m`` on GPU 0 whose fake engine marks ``started`` when it runs."""
    conf = tmp_path / "conf"
    (conf / "models.d").mkdir(parents=True)
    (conf / "agent.toml").write_text(
        f'state_dir = "{tmp_path / "state"}"\n[plugins]\nblock = ["nvml", "rocm", "fakegpu"]\n'
        f"[engine]\ncommand = [{json.dumps(sys.executable)}, {json.dumps(str(SCRIPT))}]\n"
    )
    model = write_tiny_model_dir(tmp_path / "tiny")
    (conf / "models.d" / "m.toml").write_text(
        f'model = "{model}"\nport = {agent_port()}\ngpus = [0]\nargs = ["--fake-started-file", "{started}"]\n' + extra
    )
    return conf


async def test_the_launcher_fails_at_once_with_exit_78_and_never_spawns_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    started = tmp_path / "engine-started"
    conf = write_config(tmp_path, started)  # wait_for_memory: the default 30 s
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", UUID0)
    nvml = FakeNvml([FakeGpu(used=75 * GiB, processes=[(sleeper.pid, 74 * GiB)])])
    config = load_one(conf, "m")
    deployment = config.deployment("m")
    statuses: list[str] = []

    class Recording(Notifier):
        def status(self, text: str) -> None:
            statuses.append(text)
            super().status(text)

    launcher = Launcher(
        config,
        deployment,
        make_plugin_manager(config.settings, extra=[("testgpu", Gpus(nvml))]),
        engine_argv=engine_argv(deployment, config.settings),
        notifier=Recording(""),
    )
    assert await asyncio.wait_for(launcher.run(), 20) == EXIT_CONFIG
    state = StateStore(tmp_path / "state").load("m")
    assert state.reason == (
        f"not enough free GPU memory: GPU 0 ({UUID0}): 5.0 GiB free, 72.0 GiB needed "
        f"(gpu_memory_utilization 0.9 x 80.0 GiB); held by pid {sleeper.pid} sleep 60 (74.0 GiB)"
    )
    assert "'vllm-agent gpus' shows who holds it" in state.hint
    assert not any(text.startswith("waiting for GPU memory") for text in statuses), "a foreign holder: no wait"
    assert not started.exists()


async def test_the_launcher_waits_for_its_previous_engines_memory_then_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = tmp_path / "engine-started"
    conf = write_config(tmp_path, started, "tests = []\n")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", UUID0)
    gpu = FakeGpu(used=75 * GiB, processes=[])  # the old engine is gone; its memory not yet freed
    config = load_one(conf, "m")
    deployment = config.deployment("m")
    released = threading.Event()
    statuses: list[str] = []

    class Recording(Notifier):
        def status(self, text: str) -> None:
            statuses.append(text)
            if text.startswith("waiting for GPU memory") and not released.is_set():
                released.set()
                gpu.used = GiB
            super().status(text)

    launcher = Launcher(
        config,
        deployment,
        make_plugin_manager(config.settings, extra=[("testgpu", Gpus(FakeNvml([gpu])))]),
        engine_argv=engine_argv(deployment, config.settings),
        notifier=Recording(""),
    )
    task = asyncio.create_task(launcher.run())
    for _ in range(400):
        if started.exists() or task.done():
            break
        await asyncio.sleep(0.05)
    assert started.exists(), (task.done() and task.result(), StateStore(tmp_path / "state").load("m"))
    assert any(text.startswith("waiting for GPU memory (0/30s): GPU 0 has 5.0 GiB free") for text in statuses)
    os.kill(os.getpid(), signal.SIGTERM)  # the launcher's own handler stops the engine
    assert await asyncio.wait_for(task, 30) == 0
