"""Quarantine: devices that get no new placement until an operator releases them.

Kept in one file of the state directory, so it survives restarts of the agent and of the host:
a GPU that threw a hardware Xid yesterday is no safer after a reboot until someone looked at it.
The daemon calls ``quarantine()`` when it sees a device fault; ``vllm-agent gpus --release``
lifts it. Which Xids are the device's fault follows NVIDIA's k8s device plugin.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..config.schema import Deployment
from ..fsutil import write_atomic
from ..jsonfiles import Trouble, read_json_object
from ..plugin_api import DeviceHealth
from .records import PlacementRecords

if TYPE_CHECKING:
    from ..deployments.state import DeploymentState

FILE = "gpu-quarantine.json"
_TROUBLE = Trouble("quarantine")
# Xids an application causes (a bad kernel, an out-of-range access, a reset it asked for): the
# engine's problem, not the device's. NVIDIA's k8s-device-plugin skips the same ones.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
PREFIX = "gpu-unhealthy: "  # the reason of a deployment a device fault touched: "gpu-unhealthy: UUID: why"

Action = Literal["stop", "keep", "move"]


def device_fault(xid: int) -> bool:
    """True when Xid ``xid`` says the device, not the application, is at fault."""
    return xid not in APPLICATION_XIDS


def new_problem(before: DeviceHealth | None, now: DeviceHealth) -> str | None:
    """What makes a device sick since the last look: it was lost, new uncorrectable ECC errors,
    or pages waiting to be retired or remapped (the memory went bad; only a reset repairs it)."""
    if now.error and (before is None or not before.error):
        return f"cannot be read: {now.error}"
    previous = (before.ecc_uncorrected_volatile or 0) if before is not None else 0
    if now.ecc_uncorrected_volatile and now.ecc_uncorrected_volatile > previous:
        return f"{now.ecc_uncorrected_volatile - previous} new uncorrectable ECC error(s)"
    for flag, text in _PENDING:
        if getattr(now, flag) and not (before is not None and getattr(before, flag)):
            return text
    return None


_PENDING = (
    ("retired_pages_pending", "retired pages pending (needs a GPU reset)"),
    ("remapped_rows_pending", "row remapping pending (needs a GPU reset)"),
    ("remapping_failed", "row remapping failed (the GPU needs service)"),
)


def held_on(saved: DeploymentState) -> str | None:
    """The device whose fault stopped this deployment (the daemon wrote the reason), or None.
    Such a deployment stays down until that device is released or an operator starts it."""
    if saved.phase != "failed" or not saved.reason.startswith(PREFIX):
        return None
    return saved.reason.removeprefix(PREFIX).split(": ", 1)[0] or None


class QuarantineStore:
    """UUID -> {"reason", "since"}; written atomically, read on every placement."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE

    def all(self) -> dict[str, dict[str, Any]]:
        # A damaged file is moved aside: refusing every device would stop all work.
        data = read_json_object(self.path, _TROUBLE)
        return {str(uuid): dict(entry) for uuid, entry in data.items() if isinstance(entry, dict)}

    def uuids(self) -> frozenset[str]:
        return frozenset(self.all())

    def add(self, uuid: str, reason: str) -> None:
        entries = self.all()
        if uuid not in entries:
            entries[uuid] = {"reason": reason, "since": time.time()}
            self._write(entries)

    def release(self, uuid: str) -> bool:
        """Lift the quarantine; False when the device was not quarantined."""
        entries = self.all()
        if entries.pop(uuid, None) is None:
            return False
        self._write(entries)
        return True

    def _write(self, entries: Mapping[str, Any]) -> None:
        write_atomic(self.path, json.dumps(entries, indent=1, sort_keys=True) + "\n")


def quarantine(state_dir: Path, uuid: str, reason: str) -> list[str]:
    """Quarantine a device (a GPU or MIG UUID) and return the deployments placed on it
    (on a GPU, also those on its MIG instances), sorted."""
    QuarantineStore(state_dir).add(uuid, reason)
    on_it = []
    for name, slots in PlacementRecords(state_dir).all().items():
        if any(uuid in (slot.uuid, slot.parent) for slot in slots):
            on_it.append(name)
    return sorted(on_it)


@dataclass(frozen=True)
class GpuFailureAction:
    deployment: str
    action: Action  # stop: stop the unit; keep: leave it to its own restarts; move: restart elsewhere
    reason: str  # one line for the agent_event and status: why, and why not moved


def decide_on_gpu_failure(
    deployments: Mapping[str, Deployment], affected: Sequence[str], uuid: str, reason: str
) -> list[GpuFailureAction]:
    """Per affected deployment, what its ``on_gpu_failure`` asks for. A deployment that names its
    devices in the file cannot be moved: it is stopped instead, and the reason says so."""
    actions = []
    for name in affected:
        deployment = deployments.get(name)
        if deployment is None or deployment.mode != "managed":
            continue
        why = f"{PREFIX}{uuid}: {reason}"
        action: Action = deployment.on_gpu_failure
        if action == "move" and isinstance(deployment.gpus, list):
            action = "stop"
            why += " (not moved: its gpus are named in models.d/" + name + ".toml)"
        actions.append(GpuFailureAction(name, action, why))
    return actions
