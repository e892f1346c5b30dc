"""GPU backend ``rocm``: AMD devices through amdsmi (ROCm's AMD SMI Python bindings).

Without ROCm, ``import amdsmi`` itself fails (with a KeyError, after printing a message): then the
hook offers no backend. The library object is injectable so tests run against
agent/testing/amdsmi_fake.py.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any

from vllm_agent import hookimpl
from vllm_agent.errors import GpuError
from vllm_agent.plugin_api import (
    AgentSettings,
    DeviceHealth,
    GpuBackend,
    GpuDevice,
    GpuProcess,
    GpuSnapshot,
    XidWatch,
)

from ._gpu import NoXids, ProbedOnce

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
    """AMD GPUs: VRAM for placement, the full picture for ``vllm-agent gpus`` and metrics.

    Each call opens and closes an AMD SMI session. AMD GPUs report no Xid events: the watch waits.
    """

    name = "rocm"

    def __init__(self, library: Any) -> None:
        self.library = library
        self._probe = ProbedOnce(self._open_and_close)

    def unavailable(self) -> GpuError | None:
        return self._probe.unavailable()

    def _open_and_close(self) -> None:
        smi = self.library
        self._call("initialising AMD SMI", smi.amdsmi_init, smi.AmdSmiInitFlags.INIT_AMD_GPUS)
        _shutdown(smi)

    def list_devices(self) -> Sequence[GpuDevice]:
        return self._each_device(self._device)

    def snapshot(self) -> Sequence[GpuSnapshot]:
        return self._each_device(self._snapshot)

    def watch_xids(self) -> XidWatch:
        return NoXids()

    def _each_device(self, read: Callable[[int, Any], Any]) -> list[Any]:
        smi = self.library
        self._call("initialising AMD SMI", smi.amdsmi_init, smi.AmdSmiInitFlags.INIT_AMD_GPUS)
        try:
            handles = self._call("listing GPUs", smi.amdsmi_get_processor_handles)
            return [read(index, handle) for index, handle in enumerate(handles)]
        finally:
            _shutdown(smi)

    def _device(self, index: int, handle: Any) -> GpuDevice:
        smi, doing = self.library, f"reading GPU {index}"
        vram = smi.AmdSmiMemoryType.VRAM
        total = int(self._call(doing, smi.amdsmi_get_gpu_memory_total, handle, vram))
        used = int(self._call(doing, smi.amdsmi_get_gpu_memory_usage, handle, vram))
        asic = self._call(doing, smi.amdsmi_get_gpu_asic_info, handle)
        return GpuDevice(
            index=index,
            uuid=str(self._call(doing, smi.amdsmi_get_gpu_device_uuid, handle)),
            name=_market_name(asic),
            vendor="amd",
            memory_total=total,
            memory_free=max(total - used, 0),
            backend=self.name,
        )

    def _snapshot(self, index: int, handle: Any) -> GpuSnapshot:
        """Identity and VRAM are required; every other query may go unanswered (None)."""
        try:
            device = self._device(index, handle)
        except GpuError as err:
            message = err.message.removeprefix(f"rocm: reading GPU {index} failed: ")
            return GpuSnapshot(index, "", "", "amd", 0, 0, self.name, health=DeviceHealth(error=message))
        smi = self.library

        def ask(function: Any, *args: Any) -> Any:
            try:
                return _known(function(handle, *args))
            except smi.AmdSmiException:  # NotSupported, NoPerm, NoData: unknown, not fatal
                return None

        activity = ask(smi.amdsmi_get_gpu_activity) or {}
        power = ask(smi.amdsmi_get_power_info) or {}
        temps, current = smi.AmdSmiTemperatureType, smi.AmdSmiTemperatureMetric.CURRENT
        # MI200/MI300 have no edge sensor; the hotspot (junction) is what throttles first anyway.
        temperature = ask(smi.amdsmi_get_temp_metric, temps.HOTSPOT, current)
        if temperature is None:
            temperature = ask(smi.amdsmi_get_temp_metric, temps.EDGE, current)
        processes = ask(smi.amdsmi_get_gpu_process_list)
        ecc = ask(smi.amdsmi_get_gpu_total_ecc_count) or {}
        bad_pages = ask(smi.amdsmi_get_gpu_bad_page_info)
        pending = smi.AmdSmiMemoryPageStatus.PENDING
        draw = _known(power.get("current_socket_power"))
        return GpuSnapshot(
            **vars(device),
            pci_bus_id=ask(smi.amdsmi_get_gpu_device_bdf),
            memory_used=device.memory_total - device.memory_free,
            utilisation=_known(activity.get("gfx_activity")),
            temperature=temperature,
            power_draw=_known(power.get("average_socket_power")) if draw is None else draw,  # watts
            power_limit=_known(power.get("power_limit")),
            processes=None if processes is None else tuple(_process(item) for item in processes),
            health=DeviceHealth(
                # RAS counts since the driver loaded: AMD's counterpart of NVIDIA's volatile count.
                ecc_uncorrected_volatile=_known(ecc.get("uncorrectable_count")),
                retired_pages_pending=None
                if bad_pages is None
                else any(_known(page.get("status")) == pending for page in bad_pages),
            ),
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


def _market_name(asic: Any) -> str:
    name = str(asic.get("market_name") or "") if isinstance(asic, dict) else ""
    return name if name and name != "N/A" else "AMD GPU"


def _known(value: Any) -> Any:
    """amdsmi writes "N/A" where the device has no figure."""
    return None if value == "N/A" else value


def _process(item: dict[str, Any]) -> GpuProcess:
    usage = item.get("memory_usage")
    vram = _known(usage.get("vram_mem")) if isinstance(usage, dict) else _known(item.get("mem"))
    return GpuProcess(pid=int(item["pid"]), used_memory=None if vram is None else int(vram))


def _shutdown(smi: Any) -> None:
    try:
        smi.amdsmi_shut_down()
    except Exception:  # nothing to act on, and it must not hide the real error
        pass


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
