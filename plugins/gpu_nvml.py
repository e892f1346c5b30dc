"""GPU backend ``nvml``: NVIDIA devices through NVML (the nvidia-ml-py package, module pynvml).

The library object is injectable so tests run against tests/fakes/pynvml_fake.py; the default is
the real pynvml, imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm_agent import hookimpl
from vllm_agent.errors import GpuError
from vllm_agent.plugin_api import AgentSettings, GpuBackend, GpuDevice

# pynvml error class name -> (what it means, what to do)
KNOWN_ERRORS: dict[str, tuple[str, str]] = {
    "NVMLError_LibraryNotFound": (
        "the NVML library libnvidia-ml.so.1 was not found",
        "install the NVIDIA driver (it ships libnvidia-ml); on a host without NVIDIA GPUs, block the plugin "
        'in agent.toml: [plugins] block = ["nvml"]',
    ),
    "NVMLError_DriverNotLoaded": (
        "the NVIDIA kernel driver is not loaded",
        "check `nvidia-smi` and `lsmod | grep nvidia`; "
        "load the driver (modprobe nvidia) or reboot after a driver install",
    ),
    "NVMLError_NoPermission": (
        "permission denied by NVML",
        "the service user needs read-write access to /dev/nvidia* (check DeviceAllow= and the device groups)",
    ),
    "NVMLError_NotSupported": (
        "the NVIDIA driver does not support this query",
        "update the NVIDIA driver; some virtualised GPUs do not report memory through NVML",
    ),
    "NVMLError_GpuIsLost": (
        "a GPU has fallen off the bus (GPU is lost)",
        "check `dmesg` for Xid errors; the GPU needs a reset (nvidia-smi -r) or the host a reboot",
    ),
    "NVMLError_LibRmVersionMismatch": (
        "the NVML library and the loaded kernel driver have different versions",
        "reboot (or reload the nvidia modules) after the driver upgrade",
    ),
}
MISMATCH_HINT = "upgrade or downgrade nvidia-ml-py to match the installed NVIDIA driver"


class NvmlBackend:
    """Lists NVIDIA GPUs with their memory. Each call opens and closes an NVML session."""

    name = "nvml"

    def __init__(self, library: Any | None = None) -> None:
        self._library = library

    @property
    def library(self) -> Any:
        if self._library is None:
            import pynvml

            self._library = pynvml
        return self._library

    def list_devices(self) -> Sequence[GpuDevice]:
        nvml = self.library
        self._call(nvml, "initialising NVML", nvml.nvmlInit)
        try:
            count = self._call(nvml, "counting GPUs", nvml.nvmlDeviceGetCount)
            return [self._device(nvml, index) for index in range(count)]
        finally:
            try:
                nvml.nvmlShutdown()
            except Exception:  # nothing to act on, and it must not hide the real error
                pass

    def _device(self, nvml: Any, index: int) -> GpuDevice:
        doing = f"reading GPU {index}"
        handle = self._call(nvml, doing, nvml.nvmlDeviceGetHandleByIndex, index)
        memory = self._call(nvml, doing, nvml.nvmlDeviceGetMemoryInfo, handle)
        return GpuDevice(
            index=index,
            uuid=_text(self._call(nvml, doing, nvml.nvmlDeviceGetUUID, handle)),
            name=_text(self._call(nvml, doing, nvml.nvmlDeviceGetName, handle)),
            vendor="nvidia",
            memory_total=int(memory.total),
            memory_free=int(memory.free),
            backend=self.name,
        )

    @staticmethod
    def _call(nvml: Any, doing: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except nvml.NVMLError as err:
            unknown = (f"NVML error {getattr(err, 'value', '?')}", "run `nvidia-smi` to check the driver and GPUs")
            meaning, hint = KNOWN_ERRORS.get(type(err).__name__, unknown)
            raise GpuError(f"nvml: {doing} failed: {meaning} ({err})", hint=hint) from None
        except nvml.NVMLLibraryMismatchError as err:  # not an NVMLError subclass
            message = f"nvml: {doing} failed: pynvml does not match the NVML library ({err})"
            raise GpuError(message, hint=MISMATCH_HINT) from None


def _text(value: str | bytes) -> str:
    """pynvml before 11.5 returned bytes for names and UUIDs."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@hookimpl
def agent_gpu_backends(settings: AgentSettings) -> Sequence[GpuBackend]:
    try:
        import pynvml
    except Exception:  # not installed or broken: no NVIDIA backend on this host
        return []
    return [NvmlBackend(pynvml)]
