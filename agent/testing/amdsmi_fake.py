"""A fake of amdsmi (ROCm's AMD SMI Python package) with the real names and error classes.

Mirrors py-interface/amdsmi_interface.py and amdsmi_exception.py of ROCm/amdsmi: functions take
a processor handle and check argument types (raising AmdSmiParameterException as the real ones
do), memory functions take an ``AmdSmiMemoryType``, failures raise
``AmdSmiLibraryException(err_code)`` with amdsmi_status_t codes. Calls before ``amdsmi_init``
fail with AMDSMI_STATUS_NOT_INIT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


class AmdSmiTemperatureType(IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2
    HBM_0 = 3
    HBM_1 = 4
    HBM_2 = 5
    HBM_3 = 6
    PLX = 7


class AmdSmiTemperatureMetric(IntEnum):
    CURRENT = 0
    MAX = 1
    MIN = 2


class AmdSmiMemoryPageStatus(IntEnum):
    RESERVED = 0
    PENDING = 1
    UNRESERVABLE = 2


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


@dataclass(eq=False)  # identity: two equal-looking GPUs are still two
class FakeAmdGpu:
    market_name: str = "AMD Instinct MI300X"
    total: int = 192 * 1024**3
    used: int = 512 * 1024**2
    uuid: str = ""
    bdf: str = ""
    activity: int | str = 0  # gfx_activity percent, or "N/A"
    hotspot: int | None = 40  # Celsius; None: the sensor answers NOT_SUPPORTED
    edge: int | None = None  # MI300 has no edge sensor
    power: int | str = 120  # current_socket_power, watts, or "N/A"
    power_limit: int = 750  # watts
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, VRAM bytes)
    ecc_uncorrectable: int = 0
    pending_bad_pages: int = 0
    fail: dict[str, int] = field(default_factory=dict)  # function name -> amdsmi_status_t, this GPU only


class FakeAmdSmi:
    """Stands in for the amdsmi module.

    :param gpus: the devices, in enumeration order.
    :param fail: function name -> amdsmi_status_t code (or exception) that call raises.
    """

    AmdSmiInitFlags = AmdSmiInitFlags
    AmdSmiMemoryType = AmdSmiMemoryType
    AmdSmiTemperatureType = AmdSmiTemperatureType
    AmdSmiTemperatureMetric = AmdSmiTemperatureMetric
    AmdSmiMemoryPageStatus = AmdSmiMemoryPageStatus
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

    def _gpu(self, handle: object, function: str = "") -> FakeAmdGpu:
        if not isinstance(handle, amdsmi_processor_handle):
            raise AmdSmiParameterException(handle, amdsmi_processor_handle)
        gpu = self.gpus[handle.index]
        if function in gpu.fail:
            raise AmdSmiLibraryException(gpu.fail[function])
        return gpu

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
        gpu = self._gpu(processor_handle, "amdsmi_get_gpu_device_uuid")
        return gpu.uuid or f"{processor_handle.index:02x}ff74a1-0000-1000-8000-000000000000"

    def amdsmi_get_gpu_asic_info(self, processor_handle: amdsmi_processor_handle) -> dict[str, object]:
        self._enter("amdsmi_get_gpu_asic_info")
        gpu = self._gpu(processor_handle, "amdsmi_get_gpu_asic_info")
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
        return self._gpu(processor_handle, "amdsmi_get_gpu_memory_total").total

    def amdsmi_get_gpu_memory_usage(self, processor_handle: amdsmi_processor_handle, mem_type: AmdSmiMemoryType) -> int:
        self._enter("amdsmi_get_gpu_memory_usage")
        self._memory_type(mem_type)
        return self._gpu(processor_handle, "amdsmi_get_gpu_memory_usage").used

    def amdsmi_get_gpu_device_bdf(self, processor_handle: amdsmi_processor_handle) -> str:
        self._enter("amdsmi_get_gpu_device_bdf")
        gpu = self._gpu(processor_handle, "amdsmi_get_gpu_device_bdf")
        return gpu.bdf or f"0000:{0xC1 + processor_handle.index:02x}:00.0"

    def amdsmi_get_gpu_activity(self, processor_handle: amdsmi_processor_handle) -> dict[str, object]:
        self._enter("amdsmi_get_gpu_activity")
        gpu = self._gpu(processor_handle, "amdsmi_get_gpu_activity")
        return {"gfx_activity": gpu.activity, "umc_activity": "N/A", "mm_activity": "N/A"}

    def amdsmi_get_temp_metric(
        self,
        processor_handle: amdsmi_processor_handle,
        sensor_type: AmdSmiTemperatureType,
        metric: AmdSmiTemperatureMetric,
    ) -> int:
        self._enter("amdsmi_get_temp_metric")
        gpu = self._gpu(processor_handle, "amdsmi_get_temp_metric")
        if not isinstance(sensor_type, AmdSmiTemperatureType):
            raise AmdSmiParameterException(sensor_type, AmdSmiTemperatureType)
        if not isinstance(metric, AmdSmiTemperatureMetric):
            raise AmdSmiParameterException(metric, AmdSmiTemperatureMetric)
        value = {AmdSmiTemperatureType.HOTSPOT: gpu.hotspot, AmdSmiTemperatureType.EDGE: gpu.edge}.get(sensor_type)
        if value is None or metric != AmdSmiTemperatureMetric.CURRENT:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return value

    def amdsmi_get_power_info(self, processor_handle: amdsmi_processor_handle) -> dict[str, object]:
        self._enter("amdsmi_get_power_info")
        gpu = self._gpu(processor_handle, "amdsmi_get_power_info")
        return {
            "current_socket_power": gpu.power,
            "average_socket_power": "N/A",
            "gfx_voltage": "N/A",
            "soc_voltage": "N/A",
            "mem_voltage": "N/A",
            "power_limit": gpu.power_limit,
        }

    def amdsmi_get_gpu_process_list(self, processor_handle: amdsmi_processor_handle) -> list[dict[str, object]]:
        self._enter("amdsmi_get_gpu_process_list")
        gpu = self._gpu(processor_handle, "amdsmi_get_gpu_process_list")
        return [
            {
                "name": "python3",
                "pid": pid,
                "mem": vram,
                "engine_usage": {"gfx": 0, "enc": 0},
                "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": vram},
            }
            for pid, vram in gpu.processes
        ]

    def amdsmi_get_gpu_total_ecc_count(self, processor_handle: amdsmi_processor_handle) -> dict[str, int]:
        self._enter("amdsmi_get_gpu_total_ecc_count")
        gpu = self._gpu(processor_handle, "amdsmi_get_gpu_total_ecc_count")
        return {"correctable_count": 0, "uncorrectable_count": gpu.ecc_uncorrectable, "deferred_count": 0}

    def amdsmi_get_gpu_bad_page_info(self, processor_handle: amdsmi_processor_handle) -> list[dict[str, int]]:
        self._enter("amdsmi_get_gpu_bad_page_info")
        gpu = self._gpu(processor_handle, "amdsmi_get_gpu_bad_page_info")
        return [
            {"value": i, "page_address": 0x1000 * i, "page_size": 4096, "status": AmdSmiMemoryPageStatus.PENDING}
            for i in range(gpu.pending_bad_pages)
        ]
