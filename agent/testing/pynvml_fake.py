"""A fake of pynvml (nvidia-ml-py) built from the real module's own types.

Every structure it returns (c_nvmlMemory_t, nvmlPciInfo_t, c_nvmlUtilization_t, c_nvmlEventData_t,
the friendly objects of nvmlDeviceGetComputeRunningProcesses) and every error it raises
(``pynvml.NVMLError(code)``, which becomes NVMLError_GpuIsLost and so on, and
NVMLLibraryMismatchError) come from the installed nvidia-ml-py. Device and event-set handles are
real ``c_nvmlDevice_t``/``c_nvmlEventSet_t`` pointers. Only the behaviour is faked: the devices
are FakeGpu values, any call can be made to fail per host or per device, and Xid events can be
injected (``inject_xid``) or appended to a file (``xid_file``: lines "DEVICE XID", DEVICE an index
or a UUID), as the driver would raise them. As in NVML, device calls before nvmlInit() fail with
NVMLError_Uninitialized.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import deque
from ctypes import c_void_p, cast
from dataclasses import dataclass, field
from pathlib import Path

import pynvml
from pynvml import NVMLError

GiB = 1024**3
ALL_DEVICES = -1


@dataclass(eq=False)  # identity: two equal-looking MIG devices are still two
class FakeMig:
    """A MIG device in slot ``slot`` of its GPU."""

    slot: int
    total: int = 10 * GiB
    used: int = 0
    uuid: str = ""


@dataclass(eq=False)  # identity: two equal-looking GPUs are still two
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    total: int = 80 * GiB
    used: int = GiB
    uuid: str = ""
    pci_bus_id: str = ""
    utilisation: int = 0  # percent
    temperature: int = 35  # Celsius
    power_draw: float = 70.0  # watts
    power_limit: float = 700.0  # watts
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes or None)
    ecc_volatile: int = 0  # uncorrectable, since the last reset
    ecc_aggregate: int = 0  # uncorrectable, lifetime
    retired_pending: bool = False
    remapped_pending: bool = False
    remapping_failed: bool = False
    mig: list[FakeMig] | None = None  # None: MIG disabled
    fail: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code, this device only
    lost: bool = False  # every call about this device: NVMLError_GpuIsLost


class FakeNvml:
    """Stands in for the pynvml module.

    :param gpus: the devices, in index order.
    :param fail: function name -> NVML error code (or exception) that call raises on every device.
    :param bytes_strings: return names and UUIDs as bytes, as pynvml before 11.5 did.
    :param xid_file: a file whose new lines ("DEVICE XID") become Xid events.
    """

    def __init__(
        self,
        gpus: list[FakeGpu] | int = 2,
        *,
        fail: dict[str, int | BaseException] | None = None,
        bytes_strings: bool = False,
        xid_file: Path | None = None,
    ) -> None:
        # The real module's constants, error classes and structures, so the backend sees its types.
        for name, value in vars(pynvml).items():
            if not name.startswith("_") and not inspect.isfunction(value) and not inspect.ismodule(value):
                setattr(self, name, value)
        self.gpus = [FakeGpu() for _ in range(gpus)] if isinstance(gpus, int) else list(gpus)
        self.fail = dict(fail or {})
        self.bytes_strings = bytes_strings
        self.xid_file = xid_file
        self.sessions = 0  # open nvmlInit() calls, as NVML counts them
        self.calls: list[str] = []
        self._xid_offset = 0
        self._lock = threading.Condition()
        # Handles are real pointers; the structs they point to are kept alive here, by address.
        self._structs: dict[int, tuple[object, int, int | None]] = {}  # address -> (struct, gpu, mig slot)
        self._handles: dict[tuple[int, int | None], pynvml.c_nvmlDevice_t] = {}
        self._sets: dict[int, tuple[object, set[int], deque[tuple[int, int]]]] = {}  # address -> (struct, gpus, queue)

    # Plumbing --------------------------------------------------------------------------------

    def _enter(self, function: str, needs_init: bool = True) -> None:
        self.calls.append(function)
        failure = self.fail.get(function)
        if isinstance(failure, BaseException):
            raise failure
        if failure is not None:
            raise NVMLError(failure)
        if needs_init and self.sessions == 0:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _text(self, value: str) -> str | bytes:
        return value.encode() if self.bytes_strings else value

    def _handle(self, index: int, slot: int | None = None) -> pynvml.c_nvmlDevice_t:
        key = (index, slot)
        if key not in self._handles:
            struct = pynvml.struct_c_nvmlDevice_t()
            handle = pynvml.c_nvmlDevice_t(struct)
            self._structs[_address(handle)] = (struct, index, slot)
            self._handles[key] = handle
        return self._handles[key]

    def _resolve(self, function: str, handle: object) -> tuple[FakeGpu, FakeMig | None]:
        if not isinstance(handle, pynvml.c_nvmlDevice_t) or _address(handle) not in self._structs:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        _, index, slot = self._structs[_address(handle)]
        gpu = self.gpus[index]
        if gpu.lost:
            raise NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if function in gpu.fail:
            raise NVMLError(gpu.fail[function])
        mig = None if slot is None else next(m for m in gpu.mig or [] if m.slot == slot)
        return gpu, mig

    def _device(self, function: str, handle: object) -> FakeGpu:
        """A call that only a full GPU answers (a MIG device gets NotSupported)."""
        gpu, mig = self._resolve(function, handle)
        if mig is not None:
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def uuid_of(self, index: int) -> str:
        return self.gpus[index].uuid or f"GPU-00000000-0000-0000-0000-{index:012d}"

    # Session ---------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._enter("nvmlInit", needs_init=False)
        self.sessions += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.sessions -= 1

    # Identity and memory ---------------------------------------------------------------------

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> pynvml.c_nvmlDevice_t:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._handle(index)

    def nvmlDeviceGetName(self, handle: pynvml.c_nvmlDevice_t) -> str | bytes:
        self._enter("nvmlDeviceGetName")
        gpu, mig = self._resolve("nvmlDeviceGetName", handle)
        return self._text(gpu.name if mig is None else f"{gpu.name} MIG {mig.total // GiB}gb")

    def nvmlDeviceGetUUID(self, handle: pynvml.c_nvmlDevice_t) -> str | bytes:
        self._enter("nvmlDeviceGetUUID")
        gpu, mig = self._resolve("nvmlDeviceGetUUID", handle)
        index = self.gpus.index(gpu)
        if mig is not None:
            return self._text(mig.uuid or f"MIG-00000000-0000-0000-{index:04d}-{mig.slot:012d}")
        return self._text(self.uuid_of(index))

    def nvmlDeviceGetMemoryInfo(self, handle: pynvml.c_nvmlDevice_t, version: int | None = None) -> object:
        self._enter("nvmlDeviceGetMemoryInfo")
        gpu, mig = self._resolve("nvmlDeviceGetMemoryInfo", handle)
        total, used = (gpu.total, gpu.used) if mig is None else (mig.total, mig.used)
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetPciInfo(self, handle: pynvml.c_nvmlDevice_t) -> pynvml.nvmlPciInfo_t:
        self._enter("nvmlDeviceGetPciInfo")
        gpu = self._device("nvmlDeviceGetPciInfo", handle)
        index = self.gpus.index(gpu)
        bus_id = (gpu.pci_bus_id or f"00000000:{0x18 + index:02X}:00.0").encode()
        return pynvml.nvmlPciInfo_t(busIdLegacy=bus_id, domain=0, bus=0x18 + index, device=0, busId=bus_id)

    # Load ------------------------------------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, handle: pynvml.c_nvmlDevice_t) -> pynvml.c_nvmlUtilization_t:
        self._enter("nvmlDeviceGetUtilizationRates")
        gpu = self._device("nvmlDeviceGetUtilizationRates", handle)
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilisation, memory=0)

    def nvmlDeviceGetTemperature(self, handle: pynvml.c_nvmlDevice_t, sensor: int) -> int:
        self._enter("nvmlDeviceGetTemperature")
        gpu = self._device("nvmlDeviceGetTemperature", handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature

    def nvmlDeviceGetPowerUsage(self, handle: pynvml.c_nvmlDevice_t) -> int:
        self._enter("nvmlDeviceGetPowerUsage")
        return round(self._device("nvmlDeviceGetPowerUsage", handle).power_draw * 1000)  # milliwatts

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: pynvml.c_nvmlDevice_t) -> int:
        self._enter("nvmlDeviceGetEnforcedPowerLimit")
        return round(self._device("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit * 1000)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: pynvml.c_nvmlDevice_t) -> list[object]:
        self._enter("nvmlDeviceGetComputeRunningProcesses")
        gpu = self._device("nvmlDeviceGetComputeRunningProcesses", handle)
        found = []
        for pid, used in gpu.processes:
            missing = pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
            struct = pynvml.c_nvmlProcessInfo_t(pid=pid, usedGpuMemory=missing if used is None else used)
            friendly = pynvml.nvmlStructToFriendlyObject(struct)
            if friendly.usedGpuMemory == missing:  # as pynvml does
                friendly.usedGpuMemory = None
            found.append(friendly)
        return found

    # MIG -------------------------------------------------------------------------------------

    def nvmlDeviceGetMigMode(self, device: pynvml.c_nvmlDevice_t) -> list[int]:
        self._enter("nvmlDeviceGetMigMode")
        mode = int(self._device("nvmlDeviceGetMigMode", device).mig is not None)
        return [mode, mode]  # [current, pending]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: pynvml.c_nvmlDevice_t) -> int:
        self._enter("nvmlDeviceGetMaxMigDeviceCount")
        return 7 if self._device("nvmlDeviceGetMaxMigDeviceCount", device).mig is not None else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: pynvml.c_nvmlDevice_t, index: int) -> object:
        self._enter("nvmlDeviceGetMigDeviceHandleByIndex")
        gpu = self._device("nvmlDeviceGetMigDeviceHandleByIndex", device)
        if gpu.mig is None or not 0 <= index < 7:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if not any(mig.slot == index for mig in gpu.mig):
            raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return self._handle(self.gpus.index(gpu), index)

    # Health ----------------------------------------------------------------------------------

    def nvmlDeviceGetTotalEccErrors(
        self,
        handle: pynvml.c_nvmlDevice_t,
        errorType: int,  # noqa: N803 - pynvml's parameter names
        counterType: int,  # noqa: N803
    ) -> int:
        self._enter("nvmlDeviceGetTotalEccErrors")
        gpu = self._device("nvmlDeviceGetTotalEccErrors", handle)
        if errorType not in (0, 1) or counterType not in (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC):
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if errorType != pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return 0
        return gpu.ecc_volatile if counterType == pynvml.NVML_VOLATILE_ECC else gpu.ecc_aggregate

    def nvmlDeviceGetRetiredPagesPendingStatus(self, device: pynvml.c_nvmlDevice_t) -> int:
        self._enter("nvmlDeviceGetRetiredPagesPendingStatus")
        gpu = self._device("nvmlDeviceGetRetiredPagesPendingStatus", device)
        return pynvml.NVML_FEATURE_ENABLED if gpu.retired_pending else pynvml.NVML_FEATURE_DISABLED

    def nvmlDeviceGetRemappedRows(self, device: pynvml.c_nvmlDevice_t) -> tuple[int, int, int, int]:
        self._enter("nvmlDeviceGetRemappedRows")
        gpu = self._device("nvmlDeviceGetRemappedRows", device)
        return (0, gpu.ecc_aggregate, int(gpu.remapped_pending), int(gpu.remapping_failed))

    # Events ----------------------------------------------------------------------------------

    def nvmlEventSetCreate(self) -> pynvml.c_nvmlEventSet_t:
        self._enter("nvmlEventSetCreate")
        struct = pynvml.struct_c_nvmlEventSet_t()
        event_set = pynvml.c_nvmlEventSet_t(struct)
        self._sets[_address(event_set)] = (struct, set(), deque())
        if self.xid_file is not None and len(self._sets) == 1 and self.xid_file.exists():
            # As NVML: a new event set sees only what the driver raises from now on, not the
            # lines an earlier session (a daemon before its reload) already took.
            data = self.xid_file.read_bytes()
            self._xid_offset = data.rfind(b"\n") + 1
        return event_set

    def nvmlDeviceRegisterEvents(
        self,
        handle: pynvml.c_nvmlDevice_t,
        eventTypes: int,  # noqa: N803 - pynvml's parameter names
        eventSet: object,  # noqa: N803
    ) -> None:
        self._enter("nvmlDeviceRegisterEvents")
        gpu = self._device("nvmlDeviceRegisterEvents", handle)
        if _address(eventSet) not in self._sets:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if eventTypes & pynvml.nvmlEventTypeXidCriticalError:
            self._sets[_address(eventSet)][1].add(self.gpus.index(gpu))

    def nvmlEventSetWait_v2(self, eventSet: object, timeoutms: int) -> pynvml.c_nvmlEventData_t:  # noqa: N803
        """Raises NVMLError_Timeout when nothing arrives in ``timeoutms``, as NVML does."""
        self._enter("nvmlEventSetWait_v2")
        if _address(eventSet) not in self._sets:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        queue = self._sets[_address(eventSet)][2]
        deadline = time.monotonic() + timeoutms / 1000
        with self._lock:
            while True:
                self._read_xid_file()
                if queue:
                    index, xid = queue.popleft()
                    return pynvml.c_nvmlEventData_t(
                        device=self._handle(index),
                        eventType=pynvml.nvmlEventTypeXidCriticalError,
                        eventData=xid,
                        gpuInstanceId=0xFFFFFFFF,
                        computeInstanceId=0xFFFFFFFF,
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NVMLError(pynvml.NVML_ERROR_TIMEOUT)
                self._lock.wait(min(left, 0.05) if self.xid_file else left)

    def nvmlEventSetFree(self, eventSet: object) -> None:  # noqa: N803
        self._enter("nvmlEventSetFree")
        if self._sets.pop(_address(eventSet), None) is None:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    # Test controls ---------------------------------------------------------------------------

    def inject_xid(self, device: int | str, xid: int) -> None:
        """The driver reports Xid ``xid`` on ``device`` (index or UUID): every event set that
        registered that device for Xid events gets it."""
        with self._lock:
            self._deliver(device, xid)
            self._lock.notify_all()

    def _deliver(self, device: int | str, xid: int) -> None:
        index = device if isinstance(device, int) else [self.uuid_of(i) for i in range(len(self.gpus))].index(device)
        for _, watched, queue in self._sets.values():
            if index in watched:
                queue.append((index, xid))

    def _read_xid_file(self) -> None:
        if self.xid_file is None or not self.xid_file.exists():
            return
        with self.xid_file.open("rb") as stream:
            stream.seek(self._xid_offset)
            data = stream.read()
        complete = data[: data.rfind(b"\n") + 1]  # a half-written line waits for its end
        self._xid_offset += len(complete)
        for line in complete.decode().splitlines():
            if line.strip():
                device, xid = line.split()
                self._deliver(int(device) if device.isdigit() else device, int(xid))


def _address(pointer: object) -> int | None:
    return cast(pointer, c_void_p).value
