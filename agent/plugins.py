"""The plugin host: make_plugin_manager() and a typed facade, the only caller of pm.hook."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pluggy

from . import PROJECT, hookspecs
from .config import AgentSettings, Deployment
from .errors import PluginError
from .plugin_api import (
    AgentEvent,
    GpuBackend,
    GpuDevice,
    HealthStrategy,
    ModelSource,
    TestRunner,
)

ENTRY_POINT_GROUP = PROJECT
P = TypeVar("P")


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str  # "vllm-agent 0.1.0", or "(registered in code)"
    providers: tuple[str, ...]  # "source:local", "health:http", ...


def make_plugin_manager(
    settings: AgentSettings,
    *,
    extra: Iterable[tuple[str, object]] = (),
    entry_points: bool = True,
) -> Plugins:
    """Build the manager: entry points (minus blocked names), then ``extra`` (name, plugin)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in settings.plugins.block:
        pm.set_blocked(name)
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as err:  # a broken third-party plugin must name itself
            raise PluginError(f"loading plugins of group {ENTRY_POINT_GROUP!r} failed: {err!r}") from err
    for name, plugin in extra:
        if not pm.is_blocked(name):
            pm.register(plugin, name=name)
    pm.check_pending()
    plugins = Plugins(pm, settings)
    plugins.check_unique_providers()
    return plugins


class Plugins:
    """One typed method per hook; results are attributed to the plugin that returned them."""

    def __init__(self, pm: pluggy.PluginManager, settings: AgentSettings) -> None:
        self.pm = pm
        self.settings = settings
        self._cache: dict[str, dict[str, tuple[str, Any]]] = {}

    # Providers -------------------------------------------------------------------------------

    def gpu_backends(self) -> dict[str, GpuBackend]:
        return self._named("agent_gpu_backends")

    def model_sources(self) -> dict[str, ModelSource]:
        return self._named("agent_model_sources")

    def health_strategies(self) -> dict[str, HealthStrategy]:
        return self._named("agent_health_strategies")

    def test_runners(self) -> dict[str, TestRunner]:
        return self._named("agent_post_start_tests")

    def model_source(self, name: str) -> ModelSource:
        return self._pick(self.model_sources(), name, "model source", "source")

    def health_strategy(self, name: str) -> HealthStrategy:
        return self._pick(self.health_strategies(), name, "health strategy", "health.checks")

    def test_runner(self, name: str) -> TestRunner:
        return self._pick(self.test_runners(), name, "test runner", "tests.runner")

    def provider_plugin(self, hook: str, name: str) -> str:
        return self._attributed(hook)[name][0]

    # Calls -----------------------------------------------------------------------------------

    def select_devices(self, deployment: Deployment, devices: Sequence[GpuDevice]) -> Sequence[GpuDevice] | None:
        return self.pm.hook.agent_select_devices(deployment=deployment, devices=list(devices))

    def unit_directives(self, deployment: Deployment) -> dict[str, list[str]]:
        merged: dict[str, list[str]] = {}
        for result in self.pm.hook.agent_unit_directives(deployment=deployment, settings=self.settings):
            for section, lines in (result or {}).items():
                merged.setdefault(section, []).extend(lines)
        return merged

    def emit(self, event: AgentEvent) -> None:
        self.pm.hook.agent_event(event=event)

    # Introspection ---------------------------------------------------------------------------

    def check_unique_providers(self) -> None:
        for hook in ("agent_gpu_backends", "agent_model_sources", "agent_health_strategies", "agent_post_start_tests"):
            self._attributed(hook)

    def info(self) -> list[PluginInfo]:
        dists = {
            id(plugin): f"{dist.metadata['name']} {dist.version}" for plugin, dist in self.pm.list_plugin_distinfo()
        }
        kinds = {
            "agent_gpu_backends": "gpu",
            "agent_model_sources": "source",
            "agent_health_strategies": "health",
            "agent_post_start_tests": "tests",
        }
        providers: dict[str, list[str]] = {}
        for hook, kind in kinds.items():
            for provider, (plugin, _) in self._attributed(hook).items():
                providers.setdefault(plugin, []).append(f"{kind}:{provider}")
        rows = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: str(item[0])):
            if plugin is None:  # blocked
                continue
            rows.append(
                PluginInfo(
                    name=str(name),
                    distribution=dists.get(id(plugin), "(registered in code)"),
                    providers=tuple(providers.get(str(name), [])),
                )
            )
        return rows

    def blocked(self) -> list[str]:
        return sorted(str(name) for name, plugin in self.pm.list_name_plugin() if plugin is None)

    # Internals -------------------------------------------------------------------------------

    def _named(self, hook: str) -> dict[str, Any]:
        return {name: provider for name, (_, provider) in self._attributed(hook).items()}

    def _attributed(self, hook: str) -> dict[str, tuple[str, Any]]:
        """name -> (plugin name, provider); two providers with one name is an error naming both."""
        if hook in self._cache:
            return self._cache[hook]
        found: dict[str, tuple[str, Any]] = {}
        caller = getattr(self.pm.hook, hook)
        for impl in reversed(caller.get_hookimpls()):  # registration order
            try:
                provided = impl.function(settings=self.settings) or []
            except Exception as err:
                raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook}: {err!r}") from err
            for provider in provided:
                name = getattr(provider, "name", None)
                if not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {impl.plugin_name!r} returned a provider without a name from {hook}")
                if name in found:
                    raise PluginError(
                        f"two plugins offer {name!r} from {hook}: {found[name][0]!r} and {impl.plugin_name!r}",
                        hint='block one of them in agent.toml: [plugins] block = ["NAME"]',
                    )
                found[name] = (impl.plugin_name, provider)
        self._cache[hook] = found
        return found

    @staticmethod
    def _pick(providers: dict[str, P], name: str, what: str, key: str) -> P:
        try:
            return providers[name]
        except KeyError:
            known = ", ".join(sorted(providers)) or "none"
            raise PluginError(
                f"{key}: no {what} named {name!r} (available: {known})",
                hint="install the plugin that provides it, or check that it is not blocked in agent.toml",
            ) from None
