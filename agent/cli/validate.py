"""`vllm-agent validate`: every problem in the config directory, each with its file and key."""

from __future__ import annotations

from pathlib import Path

from ..config.desired import RUNNING
from ..config.directory import Config, load_config
from ..config.schema import MODELS_DIR
from ..errors import AgentError, GpuError
from ..gpu.backends import no_backend_error
from ..gpu.placement import Placer, check_sharing
from ..gpu.slots import resolve_all, utilisation
from ..plugin_api import TestContext
from ..pluginhost.manager import make_plugin_manager


def problems_in(config_dir: Path, *, user: bool = False) -> list[str]:
    problems: list[str] = []
    if not config_dir.exists():
        return [f"{config_dir}: no such config directory (create it, or pass --config-dir)"]
    config = load_config(config_dir, user=user, problems=problems)
    try:
        plugins = make_plugin_manager(config.settings)
    except AgentError as err:
        return [*problems, f"agent.toml: plugins: {err.message}"]
    problems += _plugin_problems(config, plugins)
    problems += _gpu_problems(config, plugins)
    problems += _port_problems(config)
    problems += _gateway_problems(config)
    return problems


def _gateway_problems(config: Config) -> list[str]:
    """Names in gateway routes and fallback chains must reach a deployment: a typo there would
    only show when the primary fails."""
    from ..gateway.routing import Table  # the gateway's own resolution, not a second copy of it

    rows = [
        {"name": name, "served": d.served_name, "aliases": d.aliases, "fallback": d.fallback}
        for name, d in config.deployments.items()
    ]
    return Table.build(rows, config.settings.gateway.routes).unresolved()


def _plugin_problems(config: Config, plugins) -> list[str]:  # noqa: ANN001 - Plugins
    found: list[str] = []
    sources = plugins.model_sources()
    strategies = plugins.health_strategies()
    runners = plugins.test_runners()
    for name, deployment in sorted(config.deployments.items()):
        label = f"{MODELS_DIR}/{name}.toml"
        if deployment.mode != "external" and deployment.source_name not in sources:
            found.append(
                f"{label}: source: no model source named {deployment.source_name!r} "
                f"(available: {', '.join(sorted(sources)) or 'none'}){plugins.unloaded_note()}"
            )
        for check in deployment.health.checks:
            if check not in strategies:
                found.append(
                    f"{label}: health.checks: no health strategy named {check!r} "
                    f"(available: {', '.join(sorted(strategies)) or 'none'}){plugins.unloaded_note()}"
                )
        context = TestContext(config_dir=config.path, deployment=deployment)
        for index, spec in enumerate(deployment.tests or []):
            runner = runners.get(spec.runner)
            if runner is None:
                found.append(
                    f"{label}: tests[{index}].runner: no test runner named {spec.runner!r} "
                    f"(available: {', '.join(sorted(runners)) or 'none'}){plugins.unloaded_note()}"
                )
                continue
            try:
                found += [f"{label}: tests[{index}]: {problem}" for problem in runner.problems(spec, context)]
            except AgentError as err:  # a bug in the runner's plugin, named by the plugin host
                found.append(f"{label}: tests[{index}]: {err.message}")
    return found


def _gpu_problems(config: Config, plugins) -> list[str]:  # noqa: ANN001 - Plugins
    """A deployment that asks for GPUs on a host where no GPU backend works cannot start; named
    devices must exist, and a device named by several must hold all their claims."""
    wanting = {
        name: deployment
        for name, deployment in sorted(config.deployments.items())
        if deployment.mode != "external" and deployment.gpus  # a count >= 1 or a non-empty list
    }
    error = no_backend_error(plugins.gpu_backends(), plugins.blocked()) if wanting else None
    if error is not None:
        return [f"{MODELS_DIR}/{name}.toml: gpus: {error.message}" for name in wanting]
    named = {name: d for name, d in wanting.items() if isinstance(d.gpus, list)}
    if not named:
        return []
    placer = Placer(config, plugins)
    try:
        slots = placer.slots()
    except GpuError as err:
        return [f"{MODELS_DIR}/{name}.toml: gpus: {err.message}" for name in named]
    found: list[str] = []
    claims: dict[str, dict[str, float]] = {}  # uuid -> deployment -> gpu_memory_utilization
    for name, deployment in named.items():
        label = f"{MODELS_DIR}/{name}.toml"
        try:
            resolved = resolve_all(deployment.gpus or [], slots, label)
        except GpuError as err:
            found.append(err.message)
            continue
        for slot in resolved:
            claims.setdefault(slot.uuid, {})[name] = utilisation(deployment.gpu_memory_utilization)
    # Deployments placed by count keep their devices while wanted: they share a named device too.
    recorded = placer.records.load()
    for name, entry in recorded.items():
        if name in named or name not in config.deployments or placer.desired.get(name) != RUNNING:
            continue
        for device in entry.get("devices", []):
            if device.get("uuid") in claims:
                claims[device["uuid"]][name] = float(entry.get("utilisation", utilisation(None)))
    by_uuid = {slot.uuid: slot for slot in slots}
    for uuid, on_it in claims.items():
        for name in sorted(set(on_it) & set(named)):
            others = {other: value for other, value in on_it.items() if other != name}
            try:
                check_sharing(f"{MODELS_DIR}/{name}.toml", by_uuid[uuid], on_it[name], others)
            except GpuError as err:
                found.append(err.message)
    return found


def _port_problems(config: Config) -> list[str]:
    # Same port, any host: a wildcard bind and 127.0.0.1 collide, and vLLM's SO_REUSEPORT would
    # let two engines share one port silently.
    owners: dict[int, str] = {}
    found = []
    for name, deployment in sorted(config.deployments.items()):
        if deployment.port is None or deployment.mode == "external":
            continue
        key = deployment.port
        if key in owners:
            found.append(
                f"{MODELS_DIR}/{name}.toml: port: {deployment.port} is also used by {MODELS_DIR}/{owners[key]}.toml"
            )
        owners[key] = name
    return found
