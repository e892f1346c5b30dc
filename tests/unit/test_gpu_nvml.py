"""GPU backend "nvml": NVIDIA devices, their health, Xid events, and the NVML failures an operator can fix.

The contract test runs one body against the fake (agent/testing/pynvml_fake.py) and, on a host
with an NVIDIA driver, against the real pynvml. CI has no GPU: the real variant skips there.
"""

from __future__ import annotations

import inspect
import sys
import threading
import time
from pathlib import Path

import pynvml
import pytest
from vllm_agent.config.schema import AgentSettings
from vllm_agent.errors import GpuError
from vllm_agent_plugins import gpu_nvml
from vllm_agent_plugins.gpu_nvml import NvmlBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, home of the fakes package
from vllm_agent.testing.pynvml_fake import FakeGpu, FakeMig, FakeNvml  # noqa: E402

GiB = 1024**3


def real_nvml_or_skip() -> object:
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as err:
        pytest.skip(f"real NVML variant: no usable NVIDIA driver on this host ({err}); CI has no GPU")
    return pynvml


@pytest.fixture(params=["fake", "real"])  # "real" skips without an NVIDIA driver (CI)
def nvml(request: pytest.FixtureRequest) -> object:
    return FakeNvml(2) if request.param == "fake" else real_nvml_or_skip()


def test_contract_every_gpu_is_listed_with_uuid_name_and_memory(nvml: object) -> None:
    devices = NvmlBackend(nvml).list_devices()
    assert [device.index for device in devices] == list(range(len(devices)))
    for device in devices:
        assert device.vendor == "nvidia" and device.backend == "nvml"
        assert device.uuid.startswith(("GPU-", "MIG-")) and isinstance(device.uuid, str)
        assert device.name and isinstance(device.name, str)
        assert 0 <= device.memory_free <= device.memory_total
    assert len({device.uuid for device in devices}) == len(devices)


def test_contract_a_snapshot_reads_every_device_without_failing(nvml: object) -> None:
    backend = NvmlBackend(nvml)
    assert backend.unavailable() is None
    listed, snapshots = backend.list_devices(), backend.snapshot()
    assert [s.uuid for s in snapshots] == [d.uuid for d in listed]
    for snapshot in snapshots:
        assert snapshot.health.error is None
        assert snapshot.memory_used is not None and snapshot.memory_used <= snapshot.memory_total
        assert snapshot.pci_bus_id is None or ":" in snapshot.pci_bus_id
        assert snapshot.temperature is None or 0 < snapshot.temperature < 130
        for process in snapshot.processes or ():
            assert process.pid > 0


def test_contract_an_xid_watch_times_out_quietly_when_nothing_happens(nvml: object) -> None:
    with NvmlBackend(nvml).watch_xids() as watch:
        assert watch.wait(0.05) == []


def test_devices_report_their_own_name_and_free_memory() -> None:
    fake = FakeNvml([FakeGpu(name="NVIDIA A100-SXM4-40GB", total=40 * GiB, used=10 * GiB), FakeGpu(used=0)])
    first, second = NvmlBackend(fake).list_devices()
    assert (first.name, first.memory_total, first.memory_free) == ("NVIDIA A100-SXM4-40GB", 40 * GiB, 30 * GiB)
    assert (second.name, second.memory_free) == ("NVIDIA H100 80GB HBM3", 80 * GiB)
    assert fake.sessions == 0, "every nvmlInit is matched by nvmlShutdown"


def test_a_snapshot_has_load_power_processes_and_health() -> None:
    gpu = FakeGpu(
        uuid="GPU-a",
        pci_bus_id="00000000:3B:00.0",
        used=12 * GiB,
        utilisation=87,
        temperature=64,
        power_draw=412.5,
        power_limit=700,
        processes=[(4242, 11 * GiB), (77, None)],
        ecc_volatile=0,
        ecc_aggregate=3,
    )
    fake = FakeNvml([gpu])
    (snap,) = NvmlBackend(fake).snapshot()
    assert (snap.uuid, snap.pci_bus_id, snap.memory_used, snap.memory_free) == (
        "GPU-a",
        "00000000:3B:00.0",
        12 * GiB,
        68 * GiB,
    )
    assert (snap.utilisation, snap.temperature, snap.power_draw, snap.power_limit) == (87, 64, 412.5, 700.0)
    assert [(p.pid, p.used_memory) for p in snap.processes] == [(4242, 11 * GiB), (77, None)]
    assert (snap.health.ecc_uncorrected_volatile, snap.health.ecc_uncorrected_aggregate) == (0, 3)
    assert snap.health.ok, "old (aggregate) ECC errors alone do not make a device unhealthy"
    assert snap.mig_enabled is False and snap.mig_instances == ()
    assert fake.sessions == 0


@pytest.mark.parametrize(
    ("gpu", "problem"),
    [
        (FakeGpu(ecc_volatile=2), "2 uncorrectable ECC error(s) since the last reset"),
        (FakeGpu(retired_pending=True), "retired pages pending"),
        (FakeGpu(remapped_pending=True), "row remapping pending"),
        (FakeGpu(remapping_failed=True), "row remapping failed"),
    ],
)
def test_health_problems_are_named(gpu: FakeGpu, problem: str) -> None:
    (snap,) = NvmlBackend(FakeNvml([gpu])).snapshot()
    assert not snap.health.ok
    assert any(problem in line for line in snap.health.problems), snap.health.problems


@pytest.mark.parametrize(
    "function",
    [
        "nvmlDeviceGetPciInfo",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetTotalEccErrors",
        "nvmlDeviceGetRetiredPagesPendingStatus",
        "nvmlDeviceGetRemappedRows",
    ],
)
@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION])
def test_an_unanswered_query_is_unknown_and_the_rest_of_the_device_is_read(function: str, code: int) -> None:
    fake = FakeNvml([FakeGpu(fail={function: code}, temperature=50, power_draw=300, utilisation=10), FakeGpu()])
    first, second = NvmlBackend(fake).snapshot()
    fields = {
        "nvmlDeviceGetPciInfo": first.pci_bus_id,
        "nvmlDeviceGetUtilizationRates": first.utilisation,
        "nvmlDeviceGetTemperature": first.temperature,
        "nvmlDeviceGetPowerUsage": first.power_draw,
        "nvmlDeviceGetEnforcedPowerLimit": first.power_limit,
        "nvmlDeviceGetMigMode": first.mig_enabled,
        "nvmlDeviceGetComputeRunningProcesses": first.processes,
        "nvmlDeviceGetTotalEccErrors": first.health.ecc_uncorrected_volatile,
        "nvmlDeviceGetRetiredPagesPendingStatus": first.health.retired_pages_pending,
        "nvmlDeviceGetRemappedRows": first.health.remapped_rows_pending,
    }
    assert fields.pop(function) is None, "the unanswered query reads as unknown"
    assert all(value is not None for value in fields.values()), fields
    assert first.health.error is None and first.memory_total == 80 * GiB
    assert second.temperature == 35 and second.processes == ()


def test_a_lost_gpu_is_marked_and_the_others_still_read() -> None:
    fake = FakeNvml([FakeGpu(), FakeGpu(lost=True), FakeGpu(temperature=44)])
    first, lost, third = NvmlBackend(fake).snapshot()
    assert lost.health.error == "a GPU has fallen off the bus (GPU is lost)"
    assert not lost.health.ok and lost.memory_free == 0
    assert first.health.ok and third.temperature == 44
    assert fake.sessions == 0


def test_a_gpu_lost_in_the_middle_of_a_snapshot_is_marked_not_unknown() -> None:
    fake = FakeNvml([FakeGpu(fail={"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_GPU_IS_LOST})])
    (snap,) = NvmlBackend(fake).snapshot()
    assert snap.health.error == "a GPU has fallen off the bus (GPU is lost)"
    assert snap.uuid == "GPU-00000000-0000-0000-0000-000000000000", "what was read before is kept"


def test_mig_instances_are_listed_with_their_uuids_and_memory() -> None:
    gpu = FakeGpu(mig=[FakeMig(0, total=20 * GiB, used=GiB, uuid="MIG-x"), FakeMig(5, total=10 * GiB)])
    (snap,) = NvmlBackend(FakeNvml([gpu])).snapshot()
    assert snap.mig_enabled is True
    assert [(m.index, m.uuid, m.memory_total, m.memory_used) for m in snap.mig_instances] == [
        (0, "MIG-x", 20 * GiB, GiB),
        (5, "MIG-00000000-0000-0000-0000-000000000005", 10 * GiB, 0),
    ]


def test_names_and_uuids_from_old_pynvml_bytes_are_decoded() -> None:
    (device,) = NvmlBackend(FakeNvml(1, bytes_strings=True)).list_devices()
    assert device.name == "NVIDIA H100 80GB HBM3"
    assert device.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    (snap,) = NvmlBackend(FakeNvml(1, bytes_strings=True)).snapshot()
    assert snap.uuid == device.uuid and snap.name == device.name


def test_a_host_with_the_driver_but_no_gpu_lists_nothing() -> None:
    assert NvmlBackend(FakeNvml(0)).list_devices() == []
    assert NvmlBackend(FakeNvml(0)).snapshot() == []


@pytest.mark.parametrize(
    ("code", "meaning", "advice"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 was not found", "install the NVIDIA driver"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "kernel driver is not loaded", "modprobe nvidia"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "permission denied", "/dev/nvidia*"),
        (pynvml.NVML_ERROR_NOT_SUPPORTED, "does not support", "update the NVIDIA driver"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "different versions", "reboot"),
    ],
)
def test_nvml_start_failures_say_what_to_fix(code: int, meaning: str, advice: str) -> None:
    with pytest.raises(GpuError) as caught:
        NvmlBackend(FakeNvml(2, fail={"nvmlInit": code})).list_devices()
    assert caught.value.message.startswith("nvml: initialising NVML failed: ")
    assert meaning in caught.value.message and advice in caught.value.hint


def test_a_host_without_the_driver_reports_the_backend_unavailable_once() -> None:
    fake = FakeNvml(2, fail={"nvmlInit": pynvml.NVML_ERROR_LIBRARY_NOT_FOUND})
    backend = NvmlBackend(fake)
    first, second = backend.unavailable(), backend.unavailable()
    assert first is second and first is not None
    assert "libnvidia-ml.so.1 was not found" in first.message and "install the NVIDIA driver" in first.hint
    assert fake.calls == ["nvmlInit"], "probed once, then remembered"


def test_a_working_backend_probes_once_and_closes_its_session() -> None:
    fake = FakeNvml(1)
    backend = NvmlBackend(fake)
    assert backend.unavailable() is None and backend.unavailable() is None
    assert fake.calls == ["nvmlInit", "nvmlShutdown"] and fake.sessions == 0


def test_a_lost_gpu_in_list_devices_is_named_and_the_session_still_closed() -> None:
    fake = FakeNvml(2, fail={"nvmlDeviceGetMemoryInfo": pynvml.NVML_ERROR_GPU_IS_LOST})
    with pytest.raises(GpuError) as caught:
        NvmlBackend(fake).list_devices()
    assert "reading GPU 0 failed: a GPU has fallen off the bus (GPU is lost)" in caught.value.message
    assert "Xid" in caught.value.hint
    assert fake.calls[-1] == "nvmlShutdown" and fake.sessions == 0


def test_a_pynvml_that_does_not_match_the_library_says_so() -> None:
    fake = FakeNvml(1, fail={"nvmlInit": pynvml.NVMLLibraryMismatchError("Unversioned function called")})
    with pytest.raises(GpuError) as caught:
        NvmlBackend(fake).list_devices()
    assert "pynvml does not match the NVML library" in caught.value.message
    assert "nvidia-ml-py" in caught.value.hint


def test_a_mismatched_query_in_a_snapshot_is_unknown() -> None:
    error = pynvml.NVMLLibraryMismatchError("Unversioned function called")
    (snap,) = NvmlBackend(FakeNvml(1, fail={"nvmlDeviceGetComputeRunningProcesses": error})).snapshot()
    assert snap.processes is None and snap.health.error is None


def test_an_unlisted_nvml_error_still_becomes_a_gpu_error() -> None:
    with pytest.raises(GpuError, match=r"NVML error 999 \(Unknown Error\)"):
        NvmlBackend(FakeNvml(1, fail={"nvmlDeviceGetCount": pynvml.NVML_ERROR_UNKNOWN})).list_devices()


def test_a_failing_shutdown_does_not_lose_the_devices() -> None:
    fake = FakeNvml(2, fail={"nvmlShutdown": pynvml.NVML_ERROR_UNKNOWN})
    assert len(NvmlBackend(fake).list_devices()) == 2


# Xid events ----------------------------------------------------------------------------------


def test_an_injected_xid_arrives_with_the_device_uuid() -> None:
    fake = FakeNvml([FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")])
    with NvmlBackend(fake).watch_xids() as watch:
        fake.inject_xid(1, 79)
        fake.inject_xid("GPU-a", 48)
        assert [(e.uuid, e.xid) for e in watch.wait(1.0)] == [("GPU-b", 79), ("GPU-a", 48)]
        assert watch.wait(0.01) == []
    assert fake.sessions == 0 and "nvmlEventSetFree" in fake.calls


def test_a_blocking_wait_wakes_when_an_xid_comes_from_another_thread() -> None:
    fake = FakeNvml(1)
    with NvmlBackend(fake).watch_xids() as watch:
        threading.Timer(0.05, fake.inject_xid, (0, 31)).start()
        started = time.monotonic()
        events = watch.wait(30.0)
        assert [e.xid for e in events] == [31]
        assert time.monotonic() - started < 20, "woke on the event, not at the timeout"


def test_xids_appended_to_a_file_arrive(tmp_path: Path) -> None:
    xids = tmp_path / "xids"
    fake = FakeNvml([FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")], xid_file=xids)
    with NvmlBackend(fake).watch_xids() as watch:
        xids.write_text("GPU-b 94\n1 95\n")
        assert [(e.uuid, e.xid) for e in watch.wait(2.0)] == [("GPU-b", 94), ("GPU-b", 95)]
        with xids.open("a") as stream:
            stream.write("0 13\n")
        assert [(e.uuid, e.xid) for e in watch.wait(2.0)] == [("GPU-a", 13)]


def test_devices_without_xid_support_or_lost_are_skipped_and_the_rest_watched() -> None:
    gpus = [FakeGpu(fail={"nvmlDeviceRegisterEvents": pynvml.NVML_ERROR_NOT_SUPPORTED}), FakeGpu(lost=True), FakeGpu()]
    fake = FakeNvml(gpus)
    with NvmlBackend(fake).watch_xids() as watch:
        assert watch.unwatched == [0, 1]
        fake.inject_xid(0, 79)  # not registered: NVML does not deliver it
        fake.inject_xid(2, 79)
        assert [(e.uuid, e.xid) for e in watch.wait(1.0)] == [("GPU-00000000-0000-0000-0000-000000000002", 79)]


def test_a_watch_without_nvml_is_a_gpu_error_and_leaves_no_session() -> None:
    fake = FakeNvml(1, fail={"nvmlEventSetCreate": pynvml.NVML_ERROR_NO_PERMISSION})
    with pytest.raises(GpuError, match="creating an NVML event set failed: permission denied"):
        NvmlBackend(fake).watch_xids()
    assert fake.sessions == 0


def test_a_failing_wait_is_a_gpu_error() -> None:
    fake = FakeNvml(1)
    with NvmlBackend(fake).watch_xids() as watch:
        fake.fail["nvmlEventSetWait_v2"] = pynvml.NVML_ERROR_GPU_IS_LOST
        with pytest.raises(GpuError, match="waiting for Xid events failed: a GPU has fallen off the bus"):
            watch.wait(0.01)


def test_the_hook_offers_nvml_because_pynvml_imports() -> None:
    (backend,) = gpu_nvml.agent_gpu_backends(settings=AgentSettings())
    assert backend.name == "nvml" and backend.library is pynvml


# The fake against the real pynvml ------------------------------------------------------------


class Recording:
    """Passes attribute reads to the library and remembers their names."""

    def __init__(self, library: object) -> None:
        self._library = library
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> object:
        self.used.add(name)
        return getattr(self._library, name)


def test_every_name_the_backend_uses_exists_in_real_pynvml_as_faked() -> None:
    """Functions with the same parameters; constants, error classes and structures the same objects."""
    fake = FakeNvml([FakeGpu(processes=[(1, GiB)], mig=[FakeMig(0)]), FakeGpu(lost=True)])
    recording = Recording(fake)
    backend = NvmlBackend(recording)
    backend.unavailable()
    with pytest.raises(GpuError):  # the lost GPU
        backend.list_devices()
    backend.snapshot()
    with backend.watch_xids() as watch:
        fake.inject_xid(0, 79)
        watch.wait(0.5)
        fake.fail["nvmlEventSetWait_v2"] = pynvml.NVML_ERROR_UNKNOWN
        with pytest.raises(GpuError):
            watch.wait(0)
    assert {"nvmlDeviceGetRemappedRows", "nvmlEventSetWait_v2", "nvmlDeviceGetMigDeviceHandleByIndex"} <= recording.used
    for name in sorted(recording.used):
        real, faked = getattr(pynvml, name), getattr(fake, name)
        if inspect.isfunction(real):
            assert list(inspect.signature(faked).parameters) == list(inspect.signature(real).parameters), name
        else:
            assert faked is real, f"{name}: the fake must hand out pynvml's own object"


def test_the_fake_returns_pynvml_structures_and_raises_pynvml_errors() -> None:
    fake = FakeNvml([FakeGpu(processes=[(1, GiB)])])
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    assert isinstance(handle, pynvml.c_nvmlDevice_t)
    assert type(fake.nvmlDeviceGetMemoryInfo(handle)) is pynvml.c_nvmlMemory_t
    assert type(fake.nvmlDeviceGetPciInfo(handle)) is pynvml.nvmlPciInfo_t
    assert type(fake.nvmlDeviceGetUtilizationRates(handle)) is pynvml.c_nvmlUtilization_t
    assert type(fake.nvmlDeviceGetComputeRunningProcesses(handle)[0]) is pynvml.nvmlFriendlyObject
    event_set = fake.nvmlEventSetCreate()
    fake.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, event_set)
    fake.inject_xid(0, 79)
    assert type(fake.nvmlEventSetWait_v2(event_set, 0)) is pynvml.c_nvmlEventData_t
    with pytest.raises(pynvml.NVMLError_Timeout):
        fake.nvmlEventSetWait_v2(event_set, 0)
    fake.nvmlShutdown()
    mig = FakeNvml([FakeGpu(mig=[FakeMig(1)])])
    mig.nvmlInit()
    with pytest.raises(pynvml.NVMLError_NotFound):  # an empty MIG slot
        mig.nvmlDeviceGetMigDeviceHandleByIndex(mig.nvmlDeviceGetHandleByIndex(0), 0)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    assert not issubclass(pynvml.NVMLLibraryMismatchError, pynvml.NVMLError)
