"""Placement: which devices a deployment's engine gets, seeing every deployment of this agent.

Decided under the config-directory lock, so two `vllm-agent start` and the daemon never hand out
one device twice. The decisions live in one record in the state directory (placement.json:
deployment -> its devices and gpu_memory_utilization) rather than being parsed back out of the
drop-ins: the record names index, UUID and name, which `status` shows without asking a GPU
library, and it keeps the utilisation the engine was started with, which the sharing rule
needs; the drop-in is rendered from it. The devices of a deployment count as taken while its
file exists and its desired state is running.

A count (``gpus = N``) gets N free devices, sticky across restarts: never one taken by another
wanted deployment, quarantined or sick. Naming a device (``gpus = [0]``, a UUID) is the only way
to share one, and then the engines' gpu_memory_utilization on it must sum to at most 1.
"""

from __future__ import annotations

from typing import Any

from ..config.desired import RUNNING, DesiredStates
from ..config.directory import Config
from ..config.lock import config_lock
from ..config.schema import MODELS_DIR, Deployment
from ..errors import GpuError
from .backends import require_backend
from .quarantine import QuarantineStore
from .records import PlacementRecords
from .slots import Slot, resolve_all, slots_of, utilisation

EPSILON = 1e-9  # 0.3 + 0.7 must still be at most 1


class Placer:
    def __init__(self, config: Config, plugins: Any, *, desired: DesiredStates | None = None) -> None:
        self.config = config
        self.plugins = plugins  # Plugins: gpu_backends(), blocked(), select_devices()
        self.desired = desired or DesiredStates(config.state_dir, config.unit_dir, user=config.user)
        self.records = PlacementRecords(config.state_dir)
        self.quarantine = QuarantineStore(config.state_dir)

    def slots(self) -> list[Slot]:
        """Every device of every working backend; GpuError when none works."""
        backends = require_backend(self.plugins.gpu_backends(), self.plugins.blocked())
        return slots_of(snapshot for backend in backends.values() for snapshot in backend.snapshot())

    def place(self, deployment: Deployment, *, record: bool = True) -> list[Slot] | None:
        """The devices for ``deployment`` (None: no ``gpus``; []: CPU only). With ``record``
        the decision is written, and from then on the devices count as taken."""
        wanted = deployment.gpus
        if wanted is None:
            return None
        if wanted == 0:
            if record:
                self.forget(deployment.name)
            return []
        with config_lock(self.config.path):
            slots = self.slots()
            others = self._others(deployment.name)
            quarantined = self.quarantine.all()
            if isinstance(wanted, list):
                chosen = self._named(deployment, wanted, slots, others, quarantined)
            else:
                chosen = self._count(deployment, wanted, slots, others, quarantined)
            if record:
                self.records.set(deployment, chosen)
        return chosen

    def forget(self, name: str) -> None:
        """Free a deployment's devices (it was removed, or no longer wants GPUs)."""
        with config_lock(self.config.path):
            self.records.forget(name)

    def _others(self, name: str) -> dict[str, dict[str, Any]]:
        """The records of the other deployments that still want their devices."""
        wanted = {}
        for other, entry in self.records.load().items():
            if other == name or not self.config.deployment_file(other).exists():
                continue
            if self.desired.get(other) == RUNNING:
                wanted[other] = entry
        return wanted

    def _named(
        self,
        deployment: Deployment,
        items: list[int | str],
        slots: list[Slot],
        others: dict[str, dict[str, Any]],
        quarantined: dict[str, dict[str, Any]],
    ) -> list[Slot]:
        label = f"{MODELS_DIR}/{deployment.name}.toml"
        chosen = resolve_all(items, slots, label)
        for slot in chosen:
            if slot.uuid in quarantined or slot.parent in quarantined:
                raise _quarantined(label, slot, quarantined)
            check_sharing(label, slot, utilisation(deployment.gpu_memory_utilization), holders(others, slot))
        return chosen

    def _count(
        self,
        deployment: Deployment,
        wanted: int,
        slots: list[Slot],
        others: dict[str, dict[str, Any]],
        quarantined: dict[str, dict[str, Any]],
    ) -> list[Slot]:
        taken = {
            uuid: name
            for name, entry in others.items()
            for device in entry.get("devices", [])
            for uuid in (device.get("uuid"), device.get("parent"))
            if uuid
        }

        def why_not(slot: Slot) -> str | None:
            if slot.uuid in taken:
                return f"deployment {taken[slot.uuid]}"
            for uuid in (slot.uuid, slot.parent):
                if uuid in quarantined:
                    return f"quarantined ({quarantined[uuid].get('reason', '')})"
            if slot.problems:
                return "unhealthy (" + "; ".join(slot.problems) + ")"
            if wanted > 1 and slot.mig is not None:
                return "a MIG instance (one engine can use only one)"
            return None

        free = [slot for slot in slots if why_not(slot) is None]
        by_uuid = {slot.uuid: slot for slot in free}
        previous = self.records.get(deployment.name) or []
        if len(previous) == wanted and all(slot.uuid in by_uuid for slot in previous):
            return [by_uuid[slot.uuid] for slot in previous]  # sticky: a restart keeps its devices
        plural = "s" if wanted != 1 else ""
        if len(free) < wanted:
            busy = "; ".join(f"GPU {slot.label}: {why_not(slot)}" for slot in slots if why_not(slot))
            raise GpuError(
                f"deployment {deployment.name} wants {wanted} GPU{plural}; {len(free)} of {len(slots)} "
                f"free on this host" + (f" ({busy})" if busy else ""),
                hint="stop another deployment, release a quarantined GPU ('vllm-agent gpus --release ID'), "
                "or name a device in gpus = [...] to share it",
            )
        picked = self.plugins.select_devices(deployment, [slot.device() for slot in free])
        uuids = [device.uuid for device in picked or []]
        if len(uuids) != wanted or len(set(uuids)) != wanted or not set(uuids) <= set(by_uuid):
            raise GpuError(
                f"deployment {deployment.name} wants {wanted} GPU{plural}; the device selector returned "
                f"{uuids or 'nothing'} from the {len(free)} free",
                hint="a plugin's agent_select_devices must return distinct devices of those it was given",
            )
        return [by_uuid[uuid] for uuid in uuids]


def holders(others: dict[str, dict[str, Any]], slot: Slot) -> dict[str, float]:
    """deployment -> its gpu_memory_utilization, for every other deployment on ``slot``."""
    found = {}
    for name, entry in others.items():
        if any(slot.uuid == device.get("uuid") for device in entry.get("devices", [])):
            found[name] = float(entry.get("utilisation", utilisation(None)))
    return found


def check_sharing(label: str, slot: Slot, own: float, sharers: dict[str, float]) -> None:
    """A shared device must hold every engine's claim: the fractions sum to at most 1."""
    if not sharers:
        return
    total = own + sum(sharers.values())
    if total > 1 + EPSILON:
        parts = " + ".join(f"{name} {value:g}" for name, value in sorted(sharers.items()))
        raise GpuError(
            f"{label}: gpus: GPU {slot.label} ({slot.uuid}) is shared with {', '.join(sorted(sharers))}: "
            f"gpu_memory_utilization sums to {total:g} ({parts} + this {own:g}), must be at most 1",
            hint="lower gpu_memory_utilization in the deployments sharing it, or give this one its own device",
        )


def _quarantined(label: str, slot: Slot, quarantined: dict[str, dict[str, Any]]) -> GpuError:
    uuid = slot.uuid if slot.uuid in quarantined else slot.parent
    return GpuError(
        f"{label}: gpus: GPU {slot.label} ({uuid}) is quarantined: {quarantined[uuid].get('reason', '')}",
        hint=f"check it ('vllm-agent gpus'), then 'vllm-agent gpus --release {uuid}' lifts the quarantine",
    )
