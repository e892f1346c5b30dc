"""The launcher's failure and stop paths, with the fake engine as a real child process.

Each test runs a real Launcher (real config, plugins, state store) in this process; a stop is a
real SIGTERM to this process, taken by the launcher's own signal handler while it runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.agent_cli import write_tiny_model_dir
from harness.fake_engine import SCRIPT
from harness.ports import agent_port
from vllm_agent import hookimpl
from vllm_agent.config.directory import load_one
from vllm_agent.deployments.state import DeploymentState, StateStore
from vllm_agent.plugin_api import ResolvedModel
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.render.dropin import EXIT_CONFIG
from vllm_agent.render.engine_command import engine_argv
from vllm_agent.unit.launcher import EXIT_ENGINE, Launcher
from vllm_agent.unit.notify import Notifier

NAME = "m"


class Sources:
    """A site plugin offering model sources."""

    def __init__(self, *sources: object) -> None:
        self.sources = sources

    @hookimpl
    def agent_model_sources(self, settings):  # noqa: ANN001, ANN201
        return list(self.sources)


class BrokenSource:
    name = "broken"

    async def resolve(self, deployment, progress):  # noqa: ANN001, ANN201
        raise RuntimeError("boom")


class BlockedDownload:
    """Resolves in a worker thread that never gets an answer, like a download from a silent Hub."""

    name = "blocked"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.called = threading.Event()

    async def resolve(self, deployment, progress):  # noqa: ANN001, ANN201
        self.called.set()
        await asyncio.to_thread(self.release.wait)
        return ResolvedModel(path=Path(deployment.model), description="never")


class SignalOnPhase(StateStore):
    """The real store, which also sends this process SIGTERM as the launcher enters a phase."""

    def __init__(self, state_dir: Path, phase: str) -> None:
        super().__init__(state_dir)
        self.phase = phase

    def update(self, name: str, **changes: Any) -> DeploymentState:
        state = super().update(name, **changes)
        if changes.get("phase") == self.phase:
            os.kill(os.getpid(), signal.SIGTERM)
        return state


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.started_file = tmp_path / "engine-started"
        self.config_dir = tmp_path / "conf"
        (self.config_dir / "models.d").mkdir(parents=True)
        (self.config_dir / "agent.toml").write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            f"[engine]\ncommand = [{json.dumps(sys.executable)}, {json.dumps(str(SCRIPT))}]\n"
        )
        self.model = write_tiny_model_dir(tmp_path / "tiny")

    def launcher(
        self, *engine_args: str, extra: str = "", plugins: tuple[object, ...] = (), store: StateStore | None = None
    ) -> Launcher:
        self.write(*engine_args, extra=extra)
        config = load_one(self.config_dir, NAME)
        deployment = config.deployment(NAME)
        manager = make_plugin_manager(config.settings, extra=[(f"site{i}", p) for i, p in enumerate(plugins)])
        return Launcher(
            config,
            deployment,
            manager,
            engine_argv=engine_argv(deployment, config.settings),
            notifier=Notifier(""),
            store=store or StateStore(config.state_dir),
        )

    def write(self, *engine_args: str, extra: str = "") -> None:
        args = [*engine_args, "--fake-started-file", str(self.started_file)]
        (self.config_dir / "models.d" / f"{NAME}.toml").write_text(
            f'model = "{self.model}"\nport = {agent_port()}\nargs = {json.dumps(args)}\n' + extra
        )

    def state(self) -> DeploymentState:
        return StateStore(self.root / "state").load(NAME)

    def engine_was_started(self) -> bool:
        return self.started_file.exists()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    yield Setup(tmp_path)


async def wait_phase(setup: Setup, task: asyncio.Task[int], phase: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while setup.state().phase != phase:
        assert not task.done(), f"launcher ended ({task.result()}) before phase {phase}: {setup.state()}"
        assert time.monotonic() < deadline, f"no phase {phase} after {timeout}s: {setup.state()}"
        await asyncio.sleep(0.02)


async def stop_in_phase(setup: Setup, launcher: Launcher, phase: str) -> int:
    task = asyncio.create_task(launcher.run())
    await wait_phase(setup, task, phase)
    os.kill(os.getpid(), signal.SIGTERM)  # the launcher's handler takes it while it runs
    return await asyncio.wait_for(task, 30)


async def test_a_missing_engine_binary_is_the_recorded_reason_and_permanent(setup: Setup) -> None:
    launcher = setup.launcher(extra='[engine]\ncommand = ["no-such-vllm-here", "serve"]\n')
    assert await asyncio.wait_for(launcher.run(), 30) == EXIT_CONFIG
    state = setup.state()
    assert state.phase == "failed"
    assert state.reason.startswith(f"engine command not found: no-such-vllm-here (PATH={os.environ['PATH']})")
    assert "[engine] command" in state.hint
    assert launcher.notifier.last_status.startswith("failed: engine command not found: no-such-vllm-here")


async def test_a_bug_in_a_model_source_is_the_recorded_reason_naming_its_plugin(setup: Setup) -> None:
    launcher = setup.launcher(extra='source = "broken"\n', plugins=(Sources(BrokenSource()),))
    assert await asyncio.wait_for(launcher.run(), 30) == EXIT_CONFIG
    state = setup.state()
    assert state.phase == "failed"
    assert state.reason == "plugin 'site0' failed in model source 'broken'.resolve(): RuntimeError('boom')"
    assert 'block = ["site0"]' in state.hint
    assert not setup.engine_was_started()


async def test_a_post_start_test_failed_by_a_dying_engine_is_a_restartable_engine_death(setup: Setup) -> None:
    # The default smoke test's first generation request crashes the engine.
    launcher = setup.launcher("--fake-load-time", "0.1", "--fake-mode", "crash-after-requests:0")
    assert await asyncio.wait_for(launcher.run(), 60) == EXIT_ENGINE
    state = setup.state()
    assert state.phase == "failed" and state.startup_failures == 1
    assert state.reason.startswith("the engine exited with status 1: Fatal Python error: fake crash")
    assert state.reason.endswith("during the post-start tests")
    assert any(not test["ok"] for test in state.tests)


async def test_a_post_start_test_failed_by_a_healthy_engine_stays_permanent(setup: Setup) -> None:
    script = setup.config_dir / "tests.d" / "no.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho 'expected hello' >&2\nexit 3\n")
    script.chmod(0o755)
    launcher = setup.launcher("--fake-load-time", "0.1", extra='[[tests]]\nrunner = "script"\npath = "no.sh"\n')
    assert await asyncio.wait_for(launcher.run(), 60) == EXIT_CONFIG
    reason = setup.state().reason
    assert reason.startswith("post-start test") and "exit status 3: expected hello" in reason


# A 20-minute load that shows only a \r progress bar, compressed: the bar moves every 0.1 s for
# 4 s, eight times the stall timeout; the same load without output must stall.
COMPRESSED = "tests = []\n[startup]\nstall_timeout = 0.5\n"


async def test_carriage_return_progress_through_a_long_load_is_not_a_stall(setup: Setup) -> None:
    launcher = setup.launcher("--fake-load-time", "4", "--fake-mode", "cr-progress:0.1", extra=COMPRESSED)
    assert await stop_in_phase(setup, launcher, "serving") == 0
    assert setup.state().phase == "stopped"


async def test_the_same_long_load_without_output_is_a_stall(setup: Setup) -> None:
    launcher = setup.launcher("--fake-load-time", "4", "--fake-mode", "quiet-load", extra=COMPRESSED)
    assert await asyncio.wait_for(launcher.run(), 30) == EXIT_ENGINE
    assert setup.state().reason.startswith("the engine stalled: no output and no health for")


async def test_an_engine_that_writes_a_3_mib_line_still_becomes_ready(setup: Setup) -> None:
    # Before the fix the output pump died on it, and the engine blocked on a full pipe.
    launcher = setup.launcher(
        "--fake-load-time", "0.1", "--fake-mode", f"long-line:{3 << 20}", extra="tests = []\n[startup]\ntimeout = 20\n"
    )
    assert await stop_in_phase(setup, launcher, "serving") == 0


async def test_a_stop_while_resolving_never_starts_the_engine(setup: Setup) -> None:
    download = BlockedDownload()
    launcher = setup.launcher(extra='source = "blocked"\n', plugins=(Sources(download),))
    try:
        assert await stop_in_phase(setup, launcher, "resolving") == 0  # before the fix: waited forever
        assert download.called.is_set()
        assert setup.state().phase == "stopped"
        assert launcher.engine is None and not setup.engine_was_started()
    finally:
        download.release.set()


@pytest.mark.parametrize("phase", ["starting", "loading"])
async def test_a_stop_while_starting_or_loading_stops_the_engine_and_is_recorded(setup: Setup, phase: str) -> None:
    store = SignalOnPhase(setup.root / "state", phase)
    launcher = setup.launcher("--fake-load-time", "60", extra="tests = []\n", store=store)
    assert await asyncio.wait_for(launcher.run(), 30) == 0
    assert setup.state().phase == "stopped"
    if launcher.engine is not None:  # spawned before the signal was taken: stopped, not left
        assert launcher.engine.returncode is not None


BROKEN_PLUGIN = """
from vllm_agent import hookimpl


@hookimpl
def agent_model_sources_v2(settings):  # no such hook: the plugin manager refuses it
    return []
"""


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install a distribution "broken-site" whose plugin implements a hook that does not exist."""
    site = tmp_path / "site-packages"
    dist_info = site / "broken_site-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (site / "broken_site_plugin.py").write_text(BROKEN_PLUGIN)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-site\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[vllm_agent]\nbroken = broken_site_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("broken_site_plugin", None)


def test_a_plugin_that_fails_to_register_is_skipped_and_named_and_the_rest_load(
    setup: Setup, broken_plugin: None
) -> None:
    # It used to take every launcher down; now it is reported (vllm-agent plugins) and skipped.
    setup.write()
    plugins = make_plugin_manager(load_one(setup.config_dir, NAME).settings)
    (row,) = [row for row in plugins.info() if row.name == "broken"]
    assert (row.status, row.distribution) == ("failed", "broken-site 1.0")
    assert row.reason.startswith("registration failed:") and "agent_model_sources_v2" in row.reason
    assert "local" in plugins.model_sources()
