"""What a device fault does to the deployments on that device, on the daemon's event loop.

The device is quarantined (no new placement, kept across restarts); each deployment on it gets
a ``gpu-unhealthy:`` reason, an agent_event, and what its ``on_gpu_failure`` asks for:

- stop: the unit is stopped, but its desired state stays "running": the operator did not ask
  for a stop, the device failed. The reason is recorded in its state, which keeps the reconcile
  from starting it again; it comes back when the device is released (``gpus --release``) or
  when an operator starts it (placement then picks a healthy device, if it may).
- move: restarted, so placement (which skips quarantined devices) picks a healthy one; when
  none is free it is stopped as above, and the reason says why it was not moved.
- keep: left to run (and to its own restarts); only the reason and the event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from structlog.typing import FilteringBoundLogger

from ..config.desired import RUNNING
from ..config.names import unit_name
from ..deployments.lifecycle import Deployments
from ..errors import AgentError
from ..plugin_api import AgentEvent
from .quarantine import GpuFailureAction, QuarantineStore, decide_on_gpu_failure, held_on, quarantine
from .watch import DeviceFault


async def handle_fault(
    fault: DeviceFault,
    deployments: Deployments,
    emit: Callable[[AgentEvent], None],
    log: FilteringBoundLogger,
) -> list[GpuFailureAction]:
    """Quarantine the device and act for each deployment on it; returns what was done. A device
    already quarantined is left alone: nothing new can be on it."""
    config = deployments.config
    if fault.uuid in await asyncio.to_thread(QuarantineStore(config.state_dir).uuids):
        log.warning("fault on a quarantined GPU", gpu=fault.uuid, reason=fault.reason)
        return []
    affected = await asyncio.to_thread(quarantine, config.state_dir, fault.uuid, fault.reason)
    log.error("GPU quarantined", gpu=fault.uuid, reason=fault.reason, deployments=affected)
    done = []
    for action in decide_on_gpu_failure(config.deployments, affected, fault.uuid, fault.reason):
        try:
            action = await _act(action, deployments, fault.uuid)
        except AgentError as err:  # systemd refused: say so, carry on with the others
            log.error("acting on a GPU failure failed", deployment=action.deployment, error=err.message)
        log.error("GPU failure", deployment=action.deployment, action=action.action, reason=action.reason)
        event = AgentEvent(
            deployment=action.deployment,
            kind="unhealthy",
            reason=action.reason,
            timestamp=time.time(),
            details={"gpu": fault.uuid, "action": action.action},
        )
        try:
            emit(event)
        except Exception as err:  # an alerting plugin must not take the daemon down
            log.error("agent_event hook failed", error=repr(err))
        done.append(action)
    return done


async def _act(action: GpuFailureAction, deployments: Deployments, uuid: str) -> GpuFailureAction:
    name = action.deployment
    if action.action == "move":
        try:
            await deployments.restart(name, wait=False)
            return action
        except AgentError as err:  # no healthy device free, say: stop it and say why
            action = replace(action, action="stop", reason=f"{action.reason} (not moved: {err.message})")
    if action.action == "stop":
        await deployments.units.stop(unit_name(name))
        hint = f"'vllm-agent gpus' shows the device; 'vllm-agent gpus --release {uuid}' lifts the quarantine"
        hint += f" and the daemon starts {name} again"
        await asyncio.to_thread(deployments.store.update, name, phase="failed", reason=action.reason, hint=hint)
    return action


def released(deployments: Deployments) -> list[str]:
    """Deployments a device fault stopped whose device is released now (wanted, not quarantined
    any more). Reads files: run it in a thread."""
    config = deployments.config
    quarantined = QuarantineStore(config.state_dir).uuids()
    found = []
    for name, deployment in sorted(config.deployments.items()):
        if deployment.mode != "managed" or deployments.desired.get(name) != RUNNING:
            continue
        uuid = held_on(deployments.store.load(name))
        if uuid is not None and uuid not in quarantined:
            found.append(name)
    return found


async def resume(name: str, deployments: Deployments, log: FilteringBoundLogger) -> None:
    """Start a deployment whose device was released; the held reason goes first, so it is
    started once, and a start that fails leaves its own reason instead."""
    await asyncio.to_thread(deployments.store.update, name, phase="stopped", reason="", hint="")
    log.info("GPU released; starting the deployment its fault stopped", deployment=name)
    try:
        await deployments.start(name, wait=False)
    except AgentError as err:
        log.error("starting after a GPU release failed", deployment=name, error=err.message)
        await asyncio.to_thread(deployments.store.update, name, phase="failed", reason=err.message, hint=err.hint or "")
