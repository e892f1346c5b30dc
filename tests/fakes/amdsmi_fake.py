"""A fake of amdsmi (ROCm's AMD SMI Python package) with the real names and error classes.

Mirrors py-interface/amdsmi_interface.py and amdsmi_exception.py of ROCm/amdsmi: functions take
a processor handle and check argument types (raising AmdSmiParameterException as the real ones
do), memory functions take an ``AmdSmiMemoryType``, failures raise
``AmdSmiLibraryException(err_code)`` with amdsmi_status_t codes. Calls before ``amdsmi_init``
fail with AMDSMI_STATUS_NOT_INIT.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# amdsmi_status_t (amdsmi.h)
AMDSMI_STATUS_SUCCESS = 0
AMDSMI_STATUS_INVAL = 1
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_FAIL_LOAD_MODULE = 4
AMDSMI_STATUS_NO_PERM = 10
AMDSMI_STATUS_INIT_ERROR = 18
AMDSMI_STATUS_BUSY = 30
AMDSMI_STATUS_NOT_FOUND = 31
AMDSMI_STATUS_NOT_INIT = 32
AMDSMI_STATUS_DRIVER_NOT_LOADED = 34


class AmdSmiInitFlags(IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1 << 0
    INIT_AMD_GPUS = 1 << 1
    INIT_NON_AMD_CPUS = 1 << 2
    INIT_NON_AMD_GPUS = 1 << 3
    INIT_AMD_APUS = (1 << 0) | (1 << 1)


class AmdSmiMemoryType(IntEnum):
    VRAM = 0
    VIS_VRAM = 1
    GTT = 2


class AmdSmiException(Exception):
    """Base smi exception class"""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        self.err_info = f"AMDSMI status {err_code}"

    def __str__(self) -> str:
        return f"An error occured with code: {self.err_code}({self.err_info})"

    def get_error_code(self) -> int:
        return self.err_code


class AmdSmiParameterException(AmdSmiException):
    def __init__(self, receivedValue: object, expectedType: type, msg: str | None = None) -> None:  # noqa: N803
        super().__init__(msg)
        self.err_msg = msg or f"Invalid parameter:\nActual type: {type(receivedValue)}\nExpected type: {expectedType}"

    def __str__(self) -> str:
        return self.err_msg


@dataclass(frozen=True)
class amdsmi_processor_handle:  # noqa: N801 - a c_void_p in amdsmi_wrapper
    index: int


@dataclass(frozen=True)
class FakeAmdGpu:
    market_name: str = "AMD Instinct MI300X"
    total: int = 192 * 1024**3
    used: int = 512 * 1024**2
    uuid: str = ""


class FakeAmdSmi:
    """Stands in for the amdsmi module.

    :param gpus: the devices, in enumeration order.
    :param fail: function name -> amdsmi_status_t code (or exception) that call raises.
    """

    AmdSmiInitFlags = AmdSmiInitFlags
    AmdSmiMemoryType = AmdSmiMemoryType
    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiParameterException = AmdSmiParameterException

    def __init__(self, gpus: list[FakeAmdGpu] | int = 2, *, fail: dict[str, int | BaseException] | None = None) -> None:
        self.gpus = [FakeAmdGpu() for _ in range(gpus)] if isinstance(gpus, int) else list(gpus)
        self.fail = dict(fail or {})
        self.initialised = False
        self.calls: list[str] = []

    def _enter(self, function: str, needs_init: bool = True) -> None:
        self.calls.append(function)
        failure = self.fail.get(function)
        if isinstance(failure, BaseException):
            raise failure
        if failure is not None:
            raise AmdSmiLibraryException(failure)
        if needs_init and not self.initialised:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)

    def _gpu(self, handle: object) -> FakeAmdGpu:
        if not isinstance(handle, amdsmi_processor_handle):
            raise AmdSmiParameterException(handle, amdsmi_processor_handle)
        return self.gpus[handle.index]

    @staticmethod
    def _memory_type(mem_type: object) -> None:
        if not isinstance(mem_type, AmdSmiMemoryType):
            raise AmdSmiParameterException(mem_type, AmdSmiMemoryType)

    def amdsmi_init(self, flag: AmdSmiInitFlags = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        self._enter("amdsmi_init", needs_init=False)
        if not isinstance(flag, AmdSmiInitFlags):
            raise AmdSmiParameterException(flag, AmdSmiInitFlags)
        self.initialised = True

    def amdsmi_shut_down(self) -> None:
        self._enter("amdsmi_shut_down")
        self.initialised = False

    def amdsmi_get_processor_handles(self) -> list[amdsmi_processor_handle]:
        self._enter("amdsmi_get_processor_handles")
        return [amdsmi_processor_handle(index) for index in range(len(self.gpus))]

    def amdsmi_get_gpu_device_uuid(self, processor_handle: amdsmi_processor_handle) -> str:
        self._enter("amdsmi_get_gpu_device_uuid")
        gpu = self._gpu(processor_handle)
        return gpu.uuid or f"{processor_handle.index:02x}ff74a1-0000-1000-8000-000000000000"

    def amdsmi_get_gpu_asic_info(self, processor_handle: amdsmi_processor_handle) -> dict[str, object]:
        self._enter("amdsmi_get_gpu_asic_info")
        gpu = self._gpu(processor_handle)
        return {
            "market_name": gpu.market_name,
            "vendor_id": "0x1002",
            "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
            "device_id": "0x74a1",
            "rev_id": "0x00",
            "asic_serial": "0x0000000000000000",
            "oam_id": processor_handle.index,
            "num_compute_units": 304,
            "target_graphics_version": "gfx942",
        }

    def amdsmi_get_gpu_memory_total(self, processor_handle: amdsmi_processor_handle, mem_type: AmdSmiMemoryType) -> int:
        self._enter("amdsmi_get_gpu_memory_total")
        self._memory_type(mem_type)
        return self._gpu(processor_handle).total

    def amdsmi_get_gpu_memory_usage(self, processor_handle: amdsmi_processor_handle, mem_type: AmdSmiMemoryType) -> int:
        self._enter("amdsmi_get_gpu_memory_usage")
        self._memory_type(mem_type)
        return self._gpu(processor_handle).used
