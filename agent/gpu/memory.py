"""The launcher's pre-start check: each pinned device must have the memory vLLM will claim.

vLLM claims gpu_memory_utilization x total of every device and fails after a long start when
the free memory is short. Checking first turns that into one line at once (exit 78): the
device, free, needed, and who holds the memory. Memory that may yet be released (held by this
deployment's previous engine, by a process already gone, by a deployment being stopped, or by
no listed process at all: the driver frees a killed engine's memory late) is waited for, up to
``wait_for_memory`` seconds, with progress in the unit's status line.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import GpuError
from ..plugin_api import GpuSnapshot, MigInstance
from .owners import ProcessOwner
from .slots import gib

POLL = 0.5  # seconds between looks while waiting: NVML answers in milliseconds


@dataclass(frozen=True)
class Holder:
    pid: int
    used: int | None  # bytes; None: the driver does not say
    deployment: str | None  # ours when set
    command: str
    releasable: bool  # will likely free its memory soon (a stopping or vanished engine)

    def describe(self) -> str:
        size = "" if self.used is None else f", {gib(self.used)}"
        if self.deployment is not None:
            return f"deployment {self.deployment} (pid {self.pid}{size})"
        return f"pid {self.pid} {self.command}" + (f" ({gib(self.used)})" if self.used is not None else "")


@dataclass(frozen=True)
class Shortfall:
    label: str  # "0", "0/mig1"
    uuid: str
    free: int
    needed: int
    total: int
    fraction: float
    holders: tuple[Holder, ...]
    may_be_released: bool  # waiting can help

    def describe(self) -> str:
        held = ", ".join(holder.describe() for holder in self.holders) or "no process listed"
        return (
            f"GPU {self.label} ({self.uuid}): {gib(self.free)} free, {gib(self.needed)} needed "
            f"(gpu_memory_utilization {self.fraction:g} x {gib(self.total)}); held by {held}"
        )


def pinned_devices(env: Mapping[str, str]) -> list[str]:
    """The devices the unit pins: UUIDs (or indexes) from CUDA_ or ROCR_VISIBLE_DEVICES."""
    for variable in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        value = env.get(variable, "")
        if value.strip():
            return [item.strip() for item in value.split(",") if item.strip()]
    return []


def shortfalls(
    snapshots: Sequence[GpuSnapshot],
    pinned: Sequence[str],
    fraction: float,
    *,
    me: str,
    owner: Callable[[int], ProcessOwner],
    wanted: Callable[[str], bool],
) -> list[Shortfall]:
    """Every pinned device whose free memory does not cover ``fraction`` of its total."""
    found = []
    for item in pinned:
        gpu, mig = _find(snapshots, item)
        if mig is None:
            total, free, label, uuid = gpu.memory_total, gpu.memory_free, str(gpu.index), gpu.uuid
        else:
            total = mig.memory_total or 0
            free, label, uuid = total - (mig.memory_used or 0), f"{gpu.index}/mig{mig.index}", mig.uuid
        needed = math.ceil(fraction * total)
        if free >= needed:
            continue
        holders = tuple(_holder(process.pid, process.used_memory, me, owner, wanted) for process in gpu.processes or ())
        releasable = sum(holder.used or 0 for holder in holders if holder.releasable)
        if mig is None and gpu.processes is not None and gpu.memory_used is not None:
            # Memory no listed process holds: most often an engine's, freed late by the driver.
            releasable += max(gpu.memory_used - sum(h.used or 0 for h in holders), 0)
        unknown = gpu.processes is None or any(h.releasable and h.used is None for h in holders)
        found.append(
            Shortfall(label, uuid, free, needed, total, fraction, holders, unknown or releasable >= needed - free)
        )
    return found


async def wait_for_memory(
    read: Callable[[], list[Shortfall]],
    wait: float,
    progress: Callable[[str], None],
    *,
    stopped: Callable[[], bool] = lambda: False,
    poll: float = POLL,
) -> list[Shortfall]:
    """[] once every device has room. The shortfalls at once when waiting cannot help, or when
    ``wait`` seconds passed; [] too when asked to stop (the caller checks)."""
    started = time.monotonic()
    while True:
        short = await asyncio.to_thread(read)
        if not short or stopped():
            return []
        waited = time.monotonic() - started
        if not all(item.may_be_released for item in short) or waited >= wait:
            return short
        first = short[0]
        progress(
            f"waiting for GPU memory ({waited:.0f}/{wait:g}s): GPU {first.label} has {gib(first.free)} free, "
            f"needs {gib(first.needed)}"
        )
        await asyncio.sleep(min(poll, max(wait - waited, 0)))


def failure_message(short: Sequence[Shortfall], waited: float) -> str:
    after = f" after waiting {waited:.0f}s" if waited >= 1 else ""
    return "not enough free GPU memory" + after + ": " + "; ".join(item.describe() for item in short)


def _find(snapshots: Sequence[GpuSnapshot], item: str) -> tuple[GpuSnapshot, MigInstance | None]:
    for gpu in snapshots:
        if item == gpu.uuid or (item.isdigit() and int(item) == gpu.index):
            return gpu, None
        for mig in gpu.mig_instances:
            if mig.uuid == item:
                return gpu, mig
    known = ", ".join(gpu.uuid for gpu in snapshots) or "none"
    raise GpuError(
        f"the unit is pinned to GPU {item}, which is not on this host (devices: {known})",
        hint="'vllm-agent start NAME' places it again; 'vllm-agent gpus' lists the devices",
    )


def _holder(
    pid: int, used: int | None, me: str, owner: Callable[[int], ProcessOwner], wanted: Callable[[str], bool]
) -> Holder:
    found = owner(pid)
    gone = found.command == "?" and found.deployment is None
    ours_stopping = found.deployment is not None and (found.deployment == me or not wanted(found.deployment))
    return Holder(pid, used, found.deployment, found.command, gone or ours_stopping)
