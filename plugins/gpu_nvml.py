"""GPU backend ``nvml``: NVIDIA devices through NVML (the nvidia-ml-py package, module pynvml).

The library object is injectable so tests run against agent/testing/pynvml_fake.py; the default is
the real pynvml, imported lazily. Each call opens and closes its own NVML session (nvmlInit is
reference-counted), so a snapshot in one thread and an Xid watch in another do not interfere.
"""

from __future__ import annotations

import ctypes
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
    MigInstance,
    XidEvent,
)

from ._gpu import ProbedOnce

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
UNKNOWN_HINT = "run `nvidia-smi` to check the driver and GPUs"


class NvmlBackend:
    """NVIDIA GPUs: memory for placement, the full picture for ``vllm-agent gpus`` and metrics."""

    def __init__(self, library: Any | None = None, *, name: str = "nvml") -> None:
        self._library = library
        self.name = name
        self._probe = ProbedOnce(self._open_and_close)

    @property
    def library(self) -> Any:
        if self._library is None:
            import pynvml

            self._library = pynvml
        return self._library

    def unavailable(self) -> GpuError | None:
        return self._probe.unavailable()

    def _open_and_close(self) -> None:
        nvml = self.library
        _call(nvml, "initialising NVML", nvml.nvmlInit)
        _shutdown(nvml)

    def list_devices(self) -> Sequence[GpuDevice]:
        return self._each_device(self._device)

    def snapshot(self) -> Sequence[GpuSnapshot]:
        return self._each_device(self._snapshot)

    def watch_xids(self) -> NvmlXidWatch:
        return NvmlXidWatch(self.library)

    def _each_device(self, read: Callable[[Any, int], Any]) -> list[Any]:
        nvml = self.library
        _call(nvml, "initialising NVML", nvml.nvmlInit)
        try:
            count = _call(nvml, "counting GPUs", nvml.nvmlDeviceGetCount)
            return [read(nvml, index) for index in range(count)]
        finally:
            _shutdown(nvml)

    def _device(self, nvml: Any, index: int) -> GpuDevice:
        doing = f"reading GPU {index}"
        handle = _call(nvml, doing, nvml.nvmlDeviceGetHandleByIndex, index)
        memory = _call(nvml, doing, nvml.nvmlDeviceGetMemoryInfo, handle)
        return GpuDevice(
            index=index,
            uuid=_text(_call(nvml, doing, nvml.nvmlDeviceGetUUID, handle)),
            name=_text(_call(nvml, doing, nvml.nvmlDeviceGetName, handle)),
            vendor="nvidia",
            memory_total=int(memory.total),
            memory_free=int(memory.free),
            backend=self.name,
        )

    def _snapshot(self, nvml: Any, index: int) -> GpuSnapshot:
        """Identity and memory are required; every other query may go unanswered (None)."""
        known: dict[str, Any] = {"index": index, "uuid": "", "name": "", "vendor": "nvidia", "backend": self.name}
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            known["uuid"] = _text(nvml.nvmlDeviceGetUUID(handle))
            known["name"] = _text(nvml.nvmlDeviceGetName(handle))
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            return GpuSnapshot(
                **known,
                memory_total=int(memory.total),
                memory_free=int(memory.free),
                memory_used=int(memory.used),
                **self._details(nvml, handle),
            )
        except (nvml.NVMLError, nvml.NVMLLibraryMismatchError) as err:
            meaning, _ = _describe(nvml, err)
            return GpuSnapshot(**known, memory_total=0, memory_free=0, health=DeviceHealth(error=meaning))

    def _details(self, nvml: Any, handle: Any) -> dict[str, Any]:
        def ask(function: Any, *args: Any) -> Any:
            return _optional(nvml, function, handle, *args)

        pci = ask(nvml.nvmlDeviceGetPciInfo)
        rates = ask(nvml.nvmlDeviceGetUtilizationRates)
        power, limit = ask(nvml.nvmlDeviceGetPowerUsage), ask(nvml.nvmlDeviceGetEnforcedPowerLimit)
        mig = ask(nvml.nvmlDeviceGetMigMode)  # [current, pending]
        mig_enabled = None if mig is None else mig[0] == nvml.NVML_DEVICE_MIG_ENABLE
        processes = ask(nvml.nvmlDeviceGetComputeRunningProcesses)
        remapped = ask(nvml.nvmlDeviceGetRemappedRows)  # (correctable, uncorrectable, pending, failure)
        retired = ask(nvml.nvmlDeviceGetRetiredPagesPendingStatus)
        uncorrected = nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        return {
            "pci_bus_id": None if pci is None else _text(pci.busId),
            "utilisation": None if rates is None else int(rates.gpu),
            "temperature": ask(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU),
            "power_draw": None if power is None else power / 1000,  # NVML speaks milliwatts
            "power_limit": None if limit is None else limit / 1000,
            "mig_enabled": mig_enabled,
            "mig_instances": tuple(self._mig_instances(nvml, handle)) if mig_enabled else (),
            "processes": None
            if processes is None
            else tuple(GpuProcess(int(p.pid), _bytes_or_none(p.usedGpuMemory)) for p in processes),
            "health": DeviceHealth(
                ecc_uncorrected_volatile=ask(nvml.nvmlDeviceGetTotalEccErrors, uncorrected, nvml.NVML_VOLATILE_ECC),
                ecc_uncorrected_aggregate=ask(nvml.nvmlDeviceGetTotalEccErrors, uncorrected, nvml.NVML_AGGREGATE_ECC),
                retired_pages_pending=None if retired is None else retired == nvml.NVML_FEATURE_ENABLED,
                remapped_rows_pending=None if remapped is None else bool(remapped[2]),
                remapping_failed=None if remapped is None else bool(remapped[3]),
            ),
        }

    @staticmethod
    def _mig_instances(nvml: Any, handle: Any) -> list[MigInstance]:
        found = []
        for slot in range(_optional(nvml, nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0):
            mig = _optional(nvml, nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot)
            if mig is None:  # NotFound: an empty slot
                continue
            memory = _optional(nvml, nvml.nvmlDeviceGetMemoryInfo, mig)
            found.append(
                MigInstance(
                    index=slot,
                    uuid=_text(_optional(nvml, nvml.nvmlDeviceGetUUID, mig) or ""),
                    memory_total=None if memory is None else int(memory.total),
                    memory_used=None if memory is None else int(memory.used),
                )
            )
        return found


class NvmlXidWatch:
    """Critical-error events (Xid) of every device that supports them, from an NVML event set.

    Holds one NVML session until ``close()``. Use it from one thread: wait, then close.
    """

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        _call(nvml, "initialising NVML", nvml.nvmlInit)
        self._uuids: dict[int | None, str] = {}  # handle address -> UUID, read now: a lost GPU cannot tell later
        self.unwatched: list[int] = []  # device indexes without Xid event support
        try:
            self._set = _call(nvml, "creating an NVML event set", nvml.nvmlEventSetCreate)
            for index in range(_call(nvml, "counting GPUs", nvml.nvmlDeviceGetCount)):
                try:
                    handle = nvml.nvmlDeviceGetHandleByIndex(index)
                    uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                    nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._set)
                except (nvml.NVMLError, nvml.NVMLLibraryMismatchError):  # NotSupported (vGPU), lost: watch the others
                    self.unwatched.append(index)
                    continue
                self._uuids[_address(handle)] = uuid
        except BaseException:
            _shutdown(nvml)
            raise

    def wait(self, timeout: float) -> list[XidEvent]:
        nvml, events = self._nvml, []
        milliseconds = max(int(timeout * 1000), 0)
        while True:
            try:
                data = nvml.nvmlEventSetWait_v2(self._set, milliseconds)
            except nvml.NVMLError as err:
                if err.value == nvml.NVML_ERROR_TIMEOUT:
                    return events
                meaning, hint = _describe(nvml, err)
                raise GpuError(f"nvml: waiting for Xid events failed: {meaning} ({err})", hint=hint) from None
            if data.eventType == nvml.nvmlEventTypeXidCriticalError:
                uuid = self._uuids.get(_address(data.device), "")
                events.append(XidEvent(uuid=uuid, xid=int(data.eventData)))
            milliseconds = 0  # collect what else is queued, without waiting again

    def close(self) -> None:
        try:
            self._nvml.nvmlEventSetFree(self._set)
        except Exception:  # nothing to act on at close
            pass
        _shutdown(self._nvml)

    def __enter__(self) -> NvmlXidWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call(nvml: Any, doing: str, function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except nvml.NVMLError as err:
        meaning, hint = _describe(nvml, err)
        raise GpuError(f"nvml: {doing} failed: {meaning} ({err})", hint=hint) from None
    except nvml.NVMLLibraryMismatchError as err:  # not an NVMLError subclass
        message = f"nvml: {doing} failed: pynvml does not match the NVML library ({err})"
        raise GpuError(message, hint=MISMATCH_HINT) from None


def _optional(nvml: Any, function: Any, *args: Any) -> Any:
    """The answer, or None when this device or driver does not give it. A lost GPU is no
    "unknown": that error reaches the caller, which marks the whole device."""
    try:
        return function(*args)
    except nvml.NVMLError as err:
        if err.value == nvml.NVML_ERROR_GPU_IS_LOST:
            raise
        return None
    except nvml.NVMLLibraryMismatchError:
        return None


def _describe(nvml: Any, err: BaseException) -> tuple[str, str]:
    if isinstance(err, nvml.NVMLLibraryMismatchError):
        return "pynvml does not match the NVML library", MISMATCH_HINT
    unknown = (f"NVML error {getattr(err, 'value', '?')}", UNKNOWN_HINT)
    return KNOWN_ERRORS.get(type(err).__name__, unknown)


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # nothing to act on, and it must not hide the real error
        pass


def _address(handle: Any) -> int | None:
    """NVML device handles are pointers: the event's handle equals the registered one by address."""
    return ctypes.cast(handle, ctypes.c_void_p).value


def _bytes_or_none(value: Any) -> int | None:
    return None if value is None else int(value)  # pynvml gives None where NVML has no figure


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
