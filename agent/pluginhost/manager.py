"""The plugin host: make_plugin_manager() and a typed facade, the only caller of pm.hook."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pluggy

from .. import PROJECT, hookspecs
from ..config.schema import AgentSettings, Deployment
from ..errors import AgentError, PluginError
from ..log import get_logger
from ..plugin_api import (
    AgentEvent,
    GpuBackend,
    GpuDevice,
    HealthStrategy,
    ModelSource,
    TestRunner,
)
from .guard import guard, plugin_failure
from .load import IN_CODE, PluginRecord, declared_api, drop_unknown_hooks, load_entry_points, register

ENTRY_POINT_GROUP = PROJECT
P = TypeVar("P")
PROVIDER_KINDS = {
    "agent_gpu_backends": "gpu",
    "agent_model_sources": "source",
    "agent_health_strategies": "health",
    "agent_post_start_tests": "tests",
}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str  # "vllm-agent 0.1.0", or "(registered in code)"
    providers: tuple[str, ...]  # "source:local", "health:http", ...
    hook_api: str = ""  # the hook API range the plugin declares ("" = none declared)
    status: str = "loaded"  # loaded, blocked, refused, failed
    reason: str = ""  # why it is not loaded, or what failed in it


def make_plugin_manager(
    settings: AgentSettings,
    *,
    extra: Iterable[tuple[str, object]] = (),
    entry_points: bool = True,
    providers_now: bool = True,
) -> Plugins:
    """Build the manager: entry points (minus blocked names), then ``extra`` (name, plugin).

    A plugin that fails to import or register, or declares a hook API range that excludes ours,
    is recorded and skipped; the rest run (see ``Plugins.records``).

    ``providers_now``: ask every plugin for its providers at once, so two with one name fail
    here. A unit's launcher passes False: it asks only for the kinds it uses (its source, its
    health checks and tests; GPU backends only on a GPU), each checked when first asked for.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in settings.plugins.block:
        pm.set_blocked(name)
    records = load_entry_points(pm, ENTRY_POINT_GROUP) if entry_points else []
    for name, plugin in extra:
        if pm.is_blocked(name):
            records.append(PluginRecord(name, IN_CODE, declared_api(plugin), "blocked", "blocked in agent.toml"))
        else:
            records.append(register(pm, name, plugin))
    records = drop_unknown_hooks(pm, records)
    plugins = Plugins(pm, settings, records)
    if providers_now:
        plugins.check_unique_providers()
    return plugins


class Plugins:
    """One typed method per hook; results are attributed to the plugin that returned them."""

    def __init__(self, pm: pluggy.PluginManager, settings: AgentSettings, records: Iterable[PluginRecord] = ()) -> None:
        self.pm = pm
        self.settings = settings
        self.records: dict[str, PluginRecord] = {record.name: record for record in records}
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

    # Each implementation is called on its own (in pluggy's order), so a failure names its plugin.

    def select_devices(self, deployment: Deployment, devices: Sequence[GpuDevice]) -> Sequence[GpuDevice] | None:
        for plugin, function in self._impls("agent_select_devices"):
            try:
                picked = function(deployment=deployment, devices=list(devices))
            except Exception as err:  # the placement of this deployment fails, naming the plugin
                raise plugin_failure(plugin, "agent_select_devices", err) from err
            if picked is not None:
                return picked
        return None

    def unit_directives(self, deployment: Deployment) -> dict[str, list[str]]:
        merged: dict[str, list[str]] = {}
        for plugin, function in self._impls("agent_unit_directives"):
            try:
                result = function(deployment=deployment, settings=self.settings)
            except Exception as err:  # rendering this deployment fails, naming the plugin
                raise plugin_failure(plugin, "agent_unit_directives", err) from err
            for section, lines in (result or {}).items():
                merged.setdefault(section, []).extend(lines)
        return merged

    def emit(self, event: AgentEvent) -> list[AgentError]:
        """Hand ``event`` to every sink; one that raises is logged and returned, the others still run."""
        failures: list[AgentError] = []
        for plugin, function in self._impls("agent_event"):
            try:
                function(event=event)
            except Exception as err:
                failure = plugin_failure(plugin, "agent_event", err)
                get_logger(component="plugins").error(
                    "event sink failed", plugin=plugin, deployment=event.deployment, error=failure.message
                )
                failures.append(failure)
        return failures

    # Introspection ---------------------------------------------------------------------------

    def check_unique_providers(self) -> None:
        for hook in PROVIDER_KINDS:
            self._attributed(hook)

    def info(self) -> list[PluginInfo]:
        """Every plugin the host saw except blocked ones (``blocked()``): loaded ones with their
        providers, refused and failed ones with why."""
        providers: dict[str, list[str]] = {}
        for hook, kind in PROVIDER_KINDS.items():
            for provider, (plugin, _) in self._attributed(hook).items():
                providers.setdefault(plugin, []).append(f"{kind}:{provider}")
        records = dict(self.records)
        for name, plugin in self.pm.list_name_plugin():  # registered straight on pm, say by a test
            if plugin is not None and str(name) not in records:
                records[str(name)] = PluginRecord(str(name), IN_CODE, declared_api(plugin), "loaded")
        return [
            PluginInfo(
                name=record.name,
                distribution=record.distribution,
                providers=tuple(providers.get(record.name, [])),
                hook_api=record.hook_api,
                status=record.status,
                reason=record.reason,
            )
            for record in sorted(records.values(), key=lambda record: record.name)
            if record.status != "blocked"
        ]

    def problems(self) -> list[str]:
        """One line per plugin that was refused or failed, for start-up logs and ``doctor``."""
        return [
            f"plugin {record.name!r}{'' if record.distribution == IN_CODE else f' ({record.distribution})'} "
            f"{record.status}: {record.reason}"
            for record in sorted(self.records.values(), key=lambda record: record.name)
            if record.status in ("refused", "failed")
        ]

    def unloaded_note(self) -> str:
        """Appended to "no provider named X": the plugins that might have offered it."""
        broken = [record for record in self.records.values() if record.status in ("refused", "failed")]
        return "".join(
            f"; plugin {record.name!r}, which may provide it, {record.status}: {record.reason}" for record in broken
        )

    def blocked(self) -> list[str]:
        return sorted(str(name) for name, plugin in self.pm.list_name_plugin() if plugin is None)

    # Internals -------------------------------------------------------------------------------

    def _named(self, hook: str) -> dict[str, Any]:
        return {name: provider for name, (_, provider) in self._attributed(hook).items()}

    def _impls(self, hook: str) -> list[tuple[str, Callable[..., Any]]]:
        """(plugin name, function) in the order pluggy would call them (tryfirst ... trylast)."""
        return [(impl.plugin_name, impl.function) for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls())]

    def _fail(self, plugin: str, reason: str) -> None:
        record = self.records.get(plugin) or PluginRecord(plugin, IN_CODE, "", "loaded")
        self.records[plugin] = record.failed(reason)

    def _attributed(self, hook: str) -> dict[str, tuple[str, Any]]:
        """name -> (plugin name, guarded provider); two providers with one name is an error
        naming both. A plugin whose hook raises, or returns a nameless provider, offers nothing
        from that hook and is recorded as failed."""
        if hook in self._cache:
            return self._cache[hook]
        found: dict[str, tuple[str, Any]] = {}
        for plugin, function in reversed(self._impls(hook)):  # registration order
            try:
                provided = list(function(settings=self.settings) or [])
            except Exception as err:
                self._fail(plugin, f"{hook} raised {err!r}")
                continue
            nameless = [p for p in provided if not isinstance(getattr(p, "name", None), str) or not p.name]
            if nameless:
                self._fail(plugin, f"{hook} returned a provider without a name: {nameless[0]!r}")
                continue
            for provider in provided:
                name = provider.name
                if name in found:
                    raise PluginError(
                        f"two plugins offer {name!r} from {hook}: {found[name][0]!r} and {plugin!r}",
                        hint='block one of them in agent.toml: [plugins] block = ["NAME"]',
                    )
                found[name] = (plugin, guard(provider, plugin, hook))
        self._cache[hook] = found
        return found

    def _pick(self, providers: dict[str, P], name: str, what: str, key: str) -> P:
        try:
            return providers[name]
        except KeyError:
            known = ", ".join(sorted(providers)) or "none"
            raise PluginError(
                f"{key}: no {what} named {name!r} (available: {known}){self.unloaded_note()}",
                hint="install the plugin that provides it, or check that it is not blocked in agent.toml",
            ) from None
