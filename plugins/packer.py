"""The built-in device packer: ``gpus = N`` takes the N devices with the most free memory.

Registered trylast, so a site plugin's ``agent_select_devices`` wins. Explicit lists
(``gpus = [0, 1]``) and ``gpus`` unset are left to the caller (None).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

from vllm_agent import hookimpl
from vllm_agent.errors import GpuError
from vllm_agent.plugin_api import Deployment, GpuDevice


def pick_devices(deployment: Deployment, devices: Sequence[GpuDevice]) -> list[GpuDevice] | None:
    wanted = deployment.gpus
    if wanted is None or isinstance(wanted, list):
        return None
    if wanted == 0:
        return []
    if len(devices) < wanted:
        raise GpuError(
            f"deployment {deployment.name} wants {wanted} GPU{'s' if wanted != 1 else ''}, the host has {len(devices)}",
            hint=_too_few_hint(deployment, devices),
        )
    # One engine cannot span vendors: choose within one backend, the one with the most free memory.
    groups = [list(group) for _, group in groupby(sorted(devices, key=_backend), key=_backend)]
    best = [_most_free(group, wanted) for group in groups if len(group) >= wanted]
    if not best:
        counts = ", ".join(f"{len(group)} via {_backend(group[0]) or 'unknown'}" for group in groups)
        raise GpuError(
            f"deployment {deployment.name} wants {wanted} GPUs of one kind, the host has {counts}",
            hint=f"lower `gpus` in models.d/{deployment.name}.toml",
        )
    chosen = max(best, key=lambda picked: sum(device.memory_free for device in picked))
    return sorted(chosen, key=lambda device: device.index)


def _most_free(devices: Sequence[GpuDevice], wanted: int) -> list[GpuDevice]:
    return sorted(devices, key=lambda device: (-device.memory_free, device.index))[:wanted]


def _backend(device: GpuDevice) -> str:
    return device.backend or str(device.vendor)


def _too_few_hint(deployment: Deployment, devices: Sequence[GpuDevice]) -> str:
    if not devices:
        return "no GPU backend reported a device: check the driver (`nvidia-smi`, `amd-smi list`)"
    return f"lower `gpus` in models.d/{deployment.name}.toml to at most {len(devices)}"


@hookimpl(trylast=True)
def agent_select_devices(deployment: Deployment, devices: Sequence[GpuDevice]) -> Sequence[GpuDevice] | None:
    return pick_devices(deployment, devices)
