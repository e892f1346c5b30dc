"""Doctor's host and log findings with injected parts: GPU libraries (the NVML fake), disk figures,
the credentials directory on disk, and the journal through the command runner."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from test_doctor import engine, make_config, probes
from vllm_agent import hookimpl
from vllm_agent.config.directory import Config, load_config
from vllm_agent.config.schema import AgentSettings
from vllm_agent.doctor.report import Finding, examine
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.testing.pynvml_fake import FakeNvml
from vllm_agent.testing.unit_manager import FakeUnit, FakeUnitManager
from vllm_agent_plugins.gpu_nvml import NvmlBackend


class HungNvml(NvmlBackend):
    """NVML whose device listing never returns, as with a GPU fallen off the bus."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__(FakeNvml(1), name="hung")
        self.release = release

    def snapshot(self):  # noqa: ANN201
        self.release.wait()
        return super().snapshot()


class Backends:
    def __init__(self, *backends: object) -> None:
        self.backends = list(backends)

    @hookimpl
    def agent_gpu_backends(self, settings: AgentSettings) -> list[object]:
        return self.backends


def host(findings: list[Finding], check: str) -> list[Finding]:
    return [finding for finding in findings if finding.scope == "host" and finding.check == check]


def gpu_config(tmp_path: Path) -> Config:
    config = make_config(tmp_path)
    (config.path / "models.d" / "tiny.toml").write_text(
        (config.path / "models.d" / "tiny.toml").read_text() + "gpus = 1\n"
    )
    return load_config(config.path, user=True)


async def test_gpu_devices_are_listed_and_a_missing_library_fails_only_when_a_gpu_is_wanted(tmp_path: Path) -> None:
    config = gpu_config(tmp_path)
    plugins = make_plugin_manager(config.settings, extra=[("site", Backends(NvmlBackend(FakeNvml(2), name="fake")))])
    found = host(await examine(config, plugins, probes(FakeUnitManager(), engine(), None)), "gpu")
    fake = next(f for f in found if f.text.startswith("fake:"))
    assert fake.level == "ok" and "2 device(s)" in fake.text
    # The host's own NVML (no driver here) is a failure once a deployment asks for a GPU.
    no_driver = NvmlBackend(FakeNvml(0, fail={"nvmlInit": 9}), name="nodriver")  # NVML_ERROR_DRIVER_NOT_LOADED
    broken = make_plugin_manager(config.settings, extra=[("site", Backends(no_driver))])
    found = host(await examine(config, broken, probes(FakeUnitManager(), engine(), None)), "gpu")
    assert any(f.level == "fail" and f.hint for f in found), found


async def test_a_hung_gpu_library_is_a_finding_within_the_probe_timeout(tmp_path: Path) -> None:
    config = gpu_config(tmp_path)
    release = threading.Event()
    plugins = make_plugin_manager(config.settings, extra=[("site", Backends(HungNvml(release)))])
    began = time.monotonic()
    try:
        found = host(await examine(config, plugins, probes(FakeUnitManager(), engine(), None, timeout=0.5)), "gpu")
    finally:
        release.set()
    hung = next(f for f in found if "'hung'" in f.text)
    assert hung.level == "fail" and "did not list its devices within 0.5s" in hung.text
    assert time.monotonic() - began < 60  # bounded, with room for a loaded machine


@pytest.mark.parametrize(("free", "level"), [(50 << 30, "ok"), (3 << 30, "warn"), (200 << 20, "fail")])
async def test_disk_space_of_state_and_cache(tmp_path: Path, free: int, level: str) -> None:
    config = make_config(tmp_path)
    checks = probes(FakeUnitManager(), engine(), None)
    checks.extra["disk_usage"] = lambda path: (100 << 30, (100 << 30) - free, free)
    found = host(await examine(config, make_plugin_manager(config.settings), checks), "disk")
    assert {f.level for f in found} == {level}
    assert any(str(config.state_dir) in f.text for f in found)


async def test_credentials_readable_by_others_fail(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    directory = config.settings.credentials_dir
    assert directory is not None
    directory.mkdir(mode=0o700)
    token = directory / "hf_token"
    token.write_text("hf_x\n")
    token.chmod(0o600)
    plugins = make_plugin_manager(config.settings)
    found = host(await examine(config, plugins, probes(FakeUnitManager(), engine(), None)), "credentials")
    assert found[0].level == "ok"
    token.chmod(0o644)
    found = host(await examine(config, plugins, probes(FakeUnitManager(), engine(), None)), "credentials")
    assert found[0].level == "fail" and "hf_token" in found[0].text and "chmod" in found[0].hint


@pytest.mark.skipif(shutil.which("journalctl") is None, reason="the journal path needs journalctl on PATH")
async def test_without_log_dir_the_failure_is_read_from_the_journal(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    agent_toml = config.path / "agent.toml"
    agent_toml.write_text("".join(line for line in agent_toml.read_text().splitlines(True) if "log_dir" not in line))
    config = load_config(config.path, user=True)
    units = FakeUnitManager()
    units.define("vllm@tiny.service", FakeUnit(exit_status=1))
    await units.start("vllm@tiny.service")
    asked: list[list[str]] = []

    def run(argv, seconds):  # noqa: ANN001, ANN202 - the runner's interface: argv, timeout -> (status, output)
        asked.append(list(argv))
        if "--user-unit" in argv:
            return 0, "huggingface_hub.errors.GatedRepoError: 401 Client Error.\nCannot access gated repo for url x."
        return 0, "vllm 0.32.0"

    checks = probes(units, engine(), None)
    checks.run = run
    found = await examine(config, make_plugin_manager(config.settings), checks)
    failure = next(f for f in found if f.check == "last-failure")
    assert failure.kind == "gated" and "hf_token" in failure.hint
    assert any(argv[1:3] == ["--user-unit", "vllm@tiny.service"] for argv in asked)


async def test_the_vllm_version_is_read_through_a_console_scripts_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "vllm"
    script.parent.mkdir()
    script.write_text("#!/usr/bin/env python3\nimport sys\n")
    script.chmod(0o755)
    config = make_config(tmp_path)
    agent_toml = config.path / "agent.toml"
    agent_toml.write_text(agent_toml.read_text().split("[engine]")[0] + f'[engine]\ncommand = ["{script}", "serve"]\n')
    config = load_config(config.path, user=True)
    asked: list[list[str]] = []

    def run(argv, seconds):  # noqa: ANN001, ANN202
        asked.append(list(argv))
        return 0, "vllm 0.32.0"

    checks = probes(FakeUnitManager(), engine(), None)
    checks.run = run
    found = host(await examine(config, make_plugin_manager(config.settings), checks), "engine")
    assert found[0].level == "ok" and "vllm 0.32.0" in found[0].text
    assert asked[0][0] == shutil.which("python3")  # the shebang's interpreter, not the script


@pytest.mark.parametrize("program", ["serve.py", "package_dir"])
async def test_a_python_program_of_its_own_is_not_asked_for_vllm(tmp_path: Path, program: str) -> None:
    # `python serve.py` or `python DIR` (a directory with __main__.py) wraps its engine: that
    # interpreter having no vLLM is no failure; each deployment's /version names the engine.
    target = tmp_path / program
    if program.endswith(".py"):
        target.write_text("print('hi')\n")
    else:
        target.mkdir()
        (target / "__main__.py").write_text("print('hi')\n")
    config = make_config(tmp_path)
    agent_toml = config.path / "agent.toml"
    python = shutil.which("python3")
    agent_toml.write_text(
        agent_toml.read_text().split("[engine]")[0] + f'[engine]\ncommand = ["{python}", "{target}"]\n'
    )
    config = load_config(config.path, user=True)
    checks = probes(FakeUnitManager(), engine(), None)
    checks.run = lambda argv, seconds: (0, "no vLLM")
    (found,) = host(await examine(config, make_plugin_manager(config.settings), checks), "engine")
    assert found.level == "ok" and "a program" in found.text
    # The same interpreter running vLLM's own entry (no program of its own) is a failure.
    agent_toml.write_text(
        agent_toml.read_text().split("[engine]")[0] + f'[engine]\ncommand = ["{python}", "-m", "vllm"]\n'
    )
    config = load_config(config.path, user=True)
    (found,) = host(await examine(config, make_plugin_manager(config.settings), checks), "engine")
    assert found.level == "fail" and "has no vLLM installed" in found.text


async def test_a_placed_deployment_shows_its_devices_free_memory_and_a_quarantine(tmp_path: Path) -> None:
    from vllm_agent.gpu.placement import Placer
    from vllm_agent.gpu.quarantine import QuarantineStore

    config = gpu_config(tmp_path)
    nvml = FakeNvml(2)
    plugins = make_plugin_manager(config.settings, extra=[("site", Backends(NvmlBackend(nvml, name="fake")))])
    (slot,) = Placer(config, plugins).place(config.deployment("tiny")) or []
    found = [f for f in await examine(config, plugins, probes(FakeUnitManager(), engine(), None)) if f.check == "gpu"]
    mine = next(f for f in found if f.scope == "tiny")
    assert mine.level == "ok" and slot.uuid in mine.text and "GiB free" in mine.text
    QuarantineStore(config.state_dir).add(slot.uuid, "Xid 79: fell off the bus")
    found = [f for f in await examine(config, plugins, probes(FakeUnitManager(), engine(), None)) if f.check == "gpu"]
    mine = next(f for f in found if f.scope == "tiny")
    assert mine.level == "fail" and "quarantined: Xid 79" in mine.text and "--release" in mine.hint
