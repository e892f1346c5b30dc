"""What placement hands out: a whole GPU, or a MIG instance of one, each known by its UUID."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..errors import GpuError

if TYPE_CHECKING:
    from ..plugin_api import GpuDevice, GpuSnapshot

# vLLM's own default: what an engine claims of each device when the file does not say.
DEFAULT_UTILISATION = 0.9
GiB = 1024**3


@dataclass(frozen=True)
class Slot:
    """A device an engine can be pinned to. ``mig`` is the MIG slot on GPU ``index``, else None;
    ``parent`` the UUID of that GPU (its own UUID for a whole GPU)."""

    index: int
    uuid: str
    name: str
    backend: str
    vendor: str
    memory_total: int = 0
    memory_free: int = 0
    mig: int | None = None
    parent: str = ""
    problems: tuple[str, ...] = ()  # health problems: a sick device gets no new work
    pci_bus_id: str = ""  # finds its device node (a MIG instance: its GPU's)

    @property
    def label(self) -> str:
        """How `status` and messages name it: "0", or "0/mig3" for a MIG instance."""
        return str(self.index) if self.mig is None else f"{self.index}/mig{self.mig}"

    def device(self) -> GpuDevice:
        """As the agent_select_devices hook sees it."""
        from ..plugin_api import GpuDevice  # here: `status` reads slots and would pay 8 ms for it

        return GpuDevice(
            self.index, self.uuid, self.name, self.vendor, self.memory_total, self.memory_free, self.backend
        )

    def record(self) -> dict[str, Any]:
        """What the placement record keeps (memory changes; identity does not)."""
        return {key: value for key, value in asdict(self).items() if key not in ("memory_free", "problems")}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Slot:
        known = cls.__dataclass_fields__
        return cls(**{key: value for key, value in data.items() if key in known and key != "problems"})


def slots_of(snapshots: Iterable[GpuSnapshot]) -> list[Slot]:
    """Whole GPUs, and in place of a GPU in MIG mode its MIG instances (CUDA cannot use a
    MIG-mode GPU whole). A device that could not be read is left out."""
    found: list[Slot] = []
    for gpu in snapshots:
        if not gpu.uuid:
            continue
        problems = tuple(gpu.health.problems)
        if gpu.mig_enabled:
            for mig in gpu.mig_instances:
                total = mig.memory_total or 0
                found.append(
                    Slot(
                        gpu.index,
                        mig.uuid,
                        f"{gpu.name} MIG {mig.index}",
                        gpu.backend,
                        str(gpu.vendor),
                        total,
                        max(total - (mig.memory_used or 0), 0),
                        mig.index,
                        gpu.uuid,
                        problems,
                        gpu.pci_bus_id or "",
                    )
                )
            continue
        found.append(
            Slot(
                gpu.index,
                gpu.uuid,
                gpu.name,
                gpu.backend,
                str(gpu.vendor),
                gpu.memory_total,
                gpu.memory_free,
                None,
                gpu.uuid,
                problems,
                gpu.pci_bus_id or "",
            )
        )
    return found


def resolve(item: int | str, slots: Sequence[Slot], label: str) -> Slot:
    """The slot a deployment file names: an index (a whole GPU) or a GPU or MIG UUID."""
    text = str(item)
    if text.isdigit():
        matches = [slot for slot in slots if slot.index == int(text) and slot.mig is None]
        if not matches and any(slot.index == int(text) for slot in slots):
            migs = ", ".join(slot.uuid for slot in slots if slot.index == int(text))
            raise GpuError(
                f"{label}: gpus: GPU {text} is in MIG mode; name one of its MIG instances ({migs})",
                hint="`vllm-agent gpus` lists them",
            )
        if len(matches) > 1:
            raise GpuError(
                f"{label}: gpus: index {text} is ambiguous ({', '.join(f'{s.backend}: {s.uuid}' for s in matches)})",
                hint="name the device by its UUID",
            )
    else:
        matches = [slot for slot in slots if slot.uuid == text]
    if not matches:
        known = ", ".join(f"{slot.label} {slot.uuid}" for slot in slots) or "none"
        raise GpuError(
            f"{label}: gpus: no device {item!r} on this host (devices: {known})",
            hint="`vllm-agent gpus` lists the devices; name one by index or UUID",
        )
    return matches[0]


def resolve_all(items: Sequence[int | str], slots: Sequence[Slot], label: str) -> list[Slot]:
    """Every named device, each once: an index and a UUID may name the same one."""
    chosen = [resolve(item, slots, label) for item in items]
    seen: dict[str, int | str] = {}
    for item, slot in zip(items, chosen, strict=True):
        if slot.uuid in seen:
            raise GpuError(f"{label}: gpus: {seen[slot.uuid]!r} and {item!r} are the same device ({slot.uuid})")
        seen[slot.uuid] = item
    return chosen


def utilisation(value: float | None) -> float:
    return DEFAULT_UTILISATION if value is None else value


def gib(value: int) -> str:
    return f"{value / GiB:.1f} GiB"
