"""GPU backend ``rocm``: AMD devices through amdsmi (ROCm's AMD SMI Python bindings).

Without ROCm, ``import amdsmi`` itself fails (with a KeyError, after printing a message): then the
hook offers no backend. The library object is injectable so tests run against
tests/fakes/amdsmi_fake.py.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

from vllm_agent import hookimpl
from vllm_agent.errors import GpuError
from vllm_agent.plugin_api import AgentSettings, GpuBackend, GpuDevice

# amdsmi_status_t codes (amdsmi.h) -> (what it means, what to do)
KNOWN_STATUS: dict[int, tuple[str, str]] = {
    2: ("the amdgpu driver does not support this query", "update ROCm and the amdgpu driver"),
    4: ("a ROCm library could not be loaded", "install ROCm's amd-smi-lib matching the amdsmi Python package"),
    10: (
        "permission denied by AMD SMI",
        "the service user needs access to /dev/kfd and /dev/dri/renderD* (groups render and video, DeviceAllow=)",
    ),
    18: ("AMD SMI failed to initialise", "check `amd-smi list` and `dmesg` for amdgpu errors"),
    30: ("the GPU is busy", "retry; if it persists, check `amd-smi monitor`"),
    31: ("the GPU was not found", "check `amd-smi list`; the GPU may have been reset or removed"),
    34: ("the amdgpu kernel driver is not loaded", "load it (modprobe amdgpu) or reboot after installing ROCm"),
}
GENERIC_HINT = "run `amd-smi list` to check the driver and GPUs"


class RocmBackend:
    """Lists AMD GPUs with their VRAM. Each call opens and closes an AMD SMI session."""

    name = "rocm"

    def __init__(self, library: Any) -> None:
        self.library = library

    def list_devices(self) -> Sequence[GpuDevice]:
        smi = self.library
        self._call("initialising AMD SMI", smi.amdsmi_init, smi.AmdSmiInitFlags.INIT_AMD_GPUS)
        try:
            handles = self._call("listing GPUs", smi.amdsmi_get_processor_handles)
            return [self._device(index, handle) for index, handle in enumerate(handles)]
        finally:
            try:
                smi.amdsmi_shut_down()
            except Exception:  # nothing to act on, and it must not hide the real error
                pass

    def _device(self, index: int, handle: Any) -> GpuDevice:
        smi, doing = self.library, f"reading GPU {index}"
        vram = smi.AmdSmiMemoryType.VRAM
        total = int(self._call(doing, smi.amdsmi_get_gpu_memory_total, handle, vram))
        used = int(self._call(doing, smi.amdsmi_get_gpu_memory_usage, handle, vram))
        asic = self._call(doing, smi.amdsmi_get_gpu_asic_info, handle)
        name = str(asic.get("market_name") or "") if isinstance(asic, dict) else ""
        return GpuDevice(
            index=index,
            uuid=str(self._call(doing, smi.amdsmi_get_gpu_device_uuid, handle)),
            name=name if name and name != "N/A" else "AMD GPU",
            vendor="amd",
            memory_total=total,
            memory_free=max(total - used, 0),
            backend=self.name,
        )

    def _call(self, doing: str, function: Any, *args: Any) -> Any:
        smi = self.library
        try:
            return function(*args)
        except smi.AmdSmiLibraryException as err:
            code = _status(err)
            meaning, hint = KNOWN_STATUS.get(code, (f"AMD SMI status {code}", GENERIC_HINT))
            raise GpuError(f"rocm: {doing} failed: {meaning} ({err})", hint=hint) from None
        except smi.AmdSmiException as err:
            raise GpuError(f"rocm: {doing} failed: {err}", hint=GENERIC_HINT) from None


def _status(err: Any) -> int:
    getter = getattr(err, "get_error_code", None)
    code = getter() if callable(getter) else getattr(err, "err_code", -1)
    return abs(int(code))


def import_amdsmi() -> Any | None:
    """amdsmi, or None where ROCm is absent. Its import prints to stdout, which is our log."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import amdsmi
    except Exception:  # KeyError 'libamd_smi.so' without ROCm, ImportError without the package
        return None
    return amdsmi


@hookimpl
def agent_gpu_backends(settings: AgentSettings) -> Sequence[GpuBackend]:
    library = import_amdsmi()
    return [] if library is None else [RocmBackend(library)]
