"""Every hook vllm-agent calls, documented; nothing else.

Hooks are synchronous and cheap. A hook that offers providers returns objects whose I/O lives in
async methods (see plugin_api). Plugins implement hooks with ``@vllm_agent.hookimpl``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from . import PROJECT
from .plugin_api import (
    AgentEvent,
    AgentSettings,
    Deployment,
    GpuBackend,
    GpuDevice,
    HealthStrategy,
    ModelSource,
    TestRunner,
    UnitDirectives,
)

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def agent_gpu_backends(settings: AgentSettings) -> Sequence[GpuBackend]:
    """Return the GPU backends this plugin offers; [] when its vendor library is absent.

    :param settings: the validated agent settings (agent.toml).
    """


@hookspec(firstresult=True)
def agent_select_devices(deployment: Deployment, devices: Sequence[GpuDevice]) -> Sequence[GpuDevice] | None:
    """Choose the devices for a deployment that asks for a count of GPUs.

    Stops at the first non-None result; the built-in packer is registered trylast so a site
    plugin can override it. Return None to leave the choice to the next plugin.

    :param deployment: the deployment to place; ``deployment.gpus`` is the number wanted.
    :param devices: every device the GPU backends report, with their free memory.
    """


@hookspec
def agent_model_sources(settings: AgentSettings) -> Sequence[ModelSource]:
    """Return the model sources this plugin offers; a deployment's ``source`` picks one by name.

    :param settings: the validated agent settings (agent.toml).
    """


@hookspec
def agent_health_strategies(settings: AgentSettings) -> Sequence[HealthStrategy]:
    """Return the health strategies this plugin offers; ``[health] checks`` picks them by name.

    :param settings: the validated agent settings (agent.toml).
    """


@hookspec
def agent_post_start_tests(settings: AgentSettings) -> Sequence[TestRunner]:
    """Return the post-start test runners this plugin offers; ``[[tests]] runner`` picks one.

    :param settings: the validated agent settings (agent.toml).
    """


@hookspec
def agent_unit_directives(deployment: Deployment, settings: AgentSettings) -> UnitDirectives | None:
    """Return extra lines for a deployment's unit drop-in, keyed by section (Unit, Service).

    Lines are added after the agent's own, so a plugin can tighten sandboxing or limits. They
    change the rendered hash, so a running unit becomes stale when they change.

    :param deployment: the deployment being rendered.
    :param settings: the validated agent settings (agent.toml).
    """


@hookspec
def agent_event(event: AgentEvent) -> None:
    """Receive every deployment transition (starting, ready, unhealthy, restarted, failed,
    crash-loop, stopped), for example to send an alert. Must not block.

    :param event: what happened, to which deployment, why and when.
    """
