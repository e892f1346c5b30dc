"""A fake of pynvml (nvidia-ml-py 13.x) with the real names, signatures and error classes.

Error classes follow pynvml's pattern: ``NVMLError(value)`` returns the subclass for that code
(``NVMLError(9)`` is an ``NVMLError_DriverNotLoaded``) and every instance carries ``.value``.
``NVMLLibraryMismatchError`` is, as in pynvml, not an NVMLError. Like the real library, device
calls before ``nvmlInit()`` fail with NVMLError_Uninitialized.
"""

from __future__ import annotations

import string
from ctypes import Structure, c_ulonglong
from dataclasses import dataclass

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_UNKNOWN = 999

_STRINGS = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLLibraryMismatchError(Exception):
    pass


class NVMLError(Exception):
    _valClassMapping: dict[int, type[NVMLError]] = {}

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return _STRINGS.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    __hash__ = Exception.__hash__


def _make_error_classes() -> dict[str, type[NVMLError]]:
    """NVML_ERROR_DRIVER_NOT_LOADED -> NVMLError_DriverNotLoaded, as pynvml derives them."""
    made = {}
    for const, value in globals().copy().items():
        if not const.startswith("NVML_ERROR_"):
            continue
        name = "NVMLError_" + string.capwords(const.replace("NVML_ERROR_", ""), "_").replace("_", "")

        def new(cls: type, *args: object, _value: int = value) -> NVMLError:
            return NVMLError.__new__(cls, _value)

        made[name] = type(name, (NVMLError,), {"__new__": new})
        NVMLError._valClassMapping[value] = made[name]
    return made


ERROR_CLASSES = _make_error_classes()
globals().update(ERROR_CLASSES)


class c_nvmlMemory_t(Structure):  # noqa: N801 - pynvml's name
    _fields_ = [("total", c_ulonglong), ("free", c_ulonglong), ("used", c_ulonglong)]


@dataclass(frozen=True)
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    total: int = 80 * 1024**3
    used: int = 1024**3
    uuid: str = ""


@dataclass(frozen=True)
class c_nvmlDevice_t:  # noqa: N801 - an opaque handle in pynvml too
    index: int


class FakeNvml:
    """Stands in for the pynvml module.

    :param gpus: the devices, in index order.
    :param fail: function name -> NVML error code (or exception) that call raises.
    :param bytes_strings: return names and UUIDs as bytes, as pynvml before 11.5 did.
    """

    NVMLError = NVMLError
    NVMLLibraryMismatchError = NVMLLibraryMismatchError
    c_nvmlMemory_t = c_nvmlMemory_t

    def __init__(
        self,
        gpus: list[FakeGpu] | int = 2,
        *,
        fail: dict[str, int | BaseException] | None = None,
        bytes_strings: bool = False,
    ) -> None:
        self.gpus = [FakeGpu() for _ in range(gpus)] if isinstance(gpus, int) else list(gpus)
        self.fail = dict(fail or {})
        self.bytes_strings = bytes_strings
        self.sessions = 0  # open nvmlInit() calls, as NVML counts them
        self.calls: list[str] = []
        for name, cls in ERROR_CLASSES.items():
            setattr(self, name, cls)
        for name, value in globals().items():
            if name.startswith("NVML_"):
                setattr(self, name, value)

    def _enter(self, function: str, needs_init: bool = True) -> None:
        self.calls.append(function)
        failure = self.fail.get(function)
        if isinstance(failure, BaseException):
            raise failure
        if failure is not None:
            raise NVMLError(failure)
        if needs_init and self.sessions == 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _text(self, value: str) -> str | bytes:
        return value.encode() if self.bytes_strings else value

    def _gpu(self, handle: c_nvmlDevice_t) -> FakeGpu:
        if not isinstance(handle, c_nvmlDevice_t):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[handle.index]

    def nvmlInit(self) -> None:
        self._enter("nvmlInit", needs_init=False)
        self.sessions += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.sessions -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> c_nvmlDevice_t:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return c_nvmlDevice_t(index)

    def nvmlDeviceGetName(self, handle: c_nvmlDevice_t) -> str | bytes:
        self._enter("nvmlDeviceGetName")
        return self._text(self._gpu(handle).name)

    def nvmlDeviceGetUUID(self, handle: c_nvmlDevice_t) -> str | bytes:
        self._enter("nvmlDeviceGetUUID")
        gpu = self._gpu(handle)
        return self._text(gpu.uuid or f"GPU-00000000-0000-0000-0000-{handle.index:012d}")

    def nvmlDeviceGetMemoryInfo(self, handle: c_nvmlDevice_t, version: int | None = None) -> c_nvmlMemory_t:
        self._enter("nvmlDeviceGetMemoryInfo")
        gpu = self._gpu(handle)
        return c_nvmlMemory_t(total=gpu.total, free=gpu.total - gpu.used, used=gpu.used)
