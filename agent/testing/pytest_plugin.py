"""Fixtures of the testing kit; registered with pytest through the ``pytest11`` entry point.

Imports stay inside the fixtures so that loading this plugin costs nothing in a test run that
does not use them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def agent_settings() -> Any:
    """Default agent settings (agent.toml with nothing in it)."""
    from ..config.schema import AgentSettings

    return AgentSettings()


@pytest.fixture
def agent_plugins(agent_settings: Any) -> Callable[..., Any]:
    """``agent_plugins(plugin, name="mine", builtins=False, settings=None)`` -> the agent's typed
    plugin facade with ``plugin`` (a module or object with ``@hookimpl`` functions) registered, as
    the agent would build it; ``builtins=True`` also loads every installed entry point."""
    from ..pluginhost.manager import make_plugin_manager

    def build(*plugins: object, name: str = "plugin-under-test", builtins: bool = False, settings: Any = None) -> Any:
        extra = [(name if len(plugins) == 1 else f"{name}-{i}", plugin) for i, plugin in enumerate(plugins)]
        made = make_plugin_manager(settings or agent_settings, extra=extra, entry_points=builtins)
        refused = [problem for problem in made.problems() if any(n in problem for n, _ in extra)]
        assert not refused, refused[0]  # a plugin under test that the agent would skip
        return made

    return build


@pytest.fixture
def fake_engine() -> Iterator[Any]:
    """A running fake vLLM server serving model "m"; ``fake_engine.target`` is its EngineTarget,
    ``fake_engine.start(*args)`` starts another (``--fake-mode hang-after:1``, ...)."""
    from .engine import FakeEngine

    started: list[FakeEngine] = []

    class Engines:
        def start(self, *args: str, name: str = "m") -> FakeEngine:
            started.append(FakeEngine(*args, name=name))
            return started[-1]

    engines = Engines()
    first = engines.start()
    engines.target = first.target  # type: ignore[attr-defined]
    engines.engine = first  # type: ignore[attr-defined]
    try:
        yield engines
    finally:
        for engine in started:
            engine.stop()


@pytest.fixture
def fake_pynvml() -> Any:
    """``fake_pynvml(gpus)`` -> a FakeNvml (the pynvml module's calls, error classes and codes)
    with FakeGpu devices: pass it to ``NvmlBackend(lib)``. The module is ``.module``."""
    from . import pynvml_fake

    def make(*args: Any, **kwargs: Any) -> Any:
        return pynvml_fake.FakeNvml(*args, **kwargs)

    make.module = pynvml_fake  # type: ignore[attr-defined]
    return make


@pytest.fixture
def fake_amdsmi() -> Any:
    """``fake_amdsmi(gpus)`` -> a FakeAmdSmi (amdsmi's calls and exceptions) for ``RocmBackend``."""
    from . import amdsmi_fake

    def make(*args: Any, **kwargs: Any) -> Any:
        return amdsmi_fake.FakeAmdSmi(*args, **kwargs)

    make.module = amdsmi_fake  # type: ignore[attr-defined]
    return make


@pytest.fixture
def fake_unit_manager() -> Any:
    """An in-memory systemd with the agent's UnitManager interface (start, stop, states, events)."""
    from .unit_manager import FakeUnitManager

    return FakeUnitManager()


@pytest.fixture(scope="session")
def systemd_user_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real private ``systemd --user`` (needs root, systemd, D-Bus and unshare). Skipped with
    the reason where this host cannot run one; under CI=true that is a failure instead."""
    import os

    from .user_manager import UserManager, user_manager_available

    reason = user_manager_available()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no systemd user manager can run here: {reason}")
        pytest.skip(f"no systemd user manager here: {reason}")
    manager = UserManager.boot(Path(tmp_path_factory.mktemp("systemd")))
    try:
        yield manager
    finally:
        manager.close()
