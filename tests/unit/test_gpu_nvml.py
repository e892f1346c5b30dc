"""GPU backend "nvml": NVIDIA devices, and the NVML failures an operator can fix.

The contract test runs one body against the fake (tests/fakes/pynvml_fake.py) and, on a host
with an NVIDIA driver, against the real pynvml. CI has no GPU: the real variant skips there.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pynvml
import pytest
from vllm_agent.config import AgentSettings
from vllm_agent.errors import GpuError
from vllm_agent_plugins import gpu_nvml
from vllm_agent_plugins.gpu_nvml import NvmlBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, home of the fakes package
from fakes import pynvml_fake  # noqa: E402
from fakes.pynvml_fake import FakeGpu, FakeNvml  # noqa: E402

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


def test_devices_report_their_own_name_and_free_memory() -> None:
    fake = FakeNvml([FakeGpu(name="NVIDIA A100-SXM4-40GB", total=40 * GiB, used=10 * GiB), FakeGpu(used=0)])
    first, second = NvmlBackend(fake).list_devices()
    assert (first.name, first.memory_total, first.memory_free) == ("NVIDIA A100-SXM4-40GB", 40 * GiB, 30 * GiB)
    assert (second.name, second.memory_free) == ("NVIDIA H100 80GB HBM3", 80 * GiB)
    assert fake.sessions == 0, "every nvmlInit is matched by nvmlShutdown"


def test_names_and_uuids_from_old_pynvml_bytes_are_decoded() -> None:
    (device,) = NvmlBackend(FakeNvml(1, bytes_strings=True)).list_devices()
    assert device.name == "NVIDIA H100 80GB HBM3"
    assert device.uuid == "GPU-00000000-0000-0000-0000-000000000000"


def test_a_host_with_the_driver_but_no_gpu_lists_nothing() -> None:
    assert NvmlBackend(FakeNvml(0)).list_devices() == []


@pytest.mark.parametrize(
    ("code", "meaning", "advice"),
    [
        (pynvml_fake.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 was not found", "install the NVIDIA driver"),
        (pynvml_fake.NVML_ERROR_DRIVER_NOT_LOADED, "kernel driver is not loaded", "modprobe nvidia"),
        (pynvml_fake.NVML_ERROR_NO_PERMISSION, "permission denied", "/dev/nvidia*"),
        (pynvml_fake.NVML_ERROR_NOT_SUPPORTED, "does not support", "update the NVIDIA driver"),
        (pynvml_fake.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "different versions", "reboot"),
    ],
)
def test_nvml_start_failures_say_what_to_fix(code: int, meaning: str, advice: str) -> None:
    with pytest.raises(GpuError) as caught:
        NvmlBackend(FakeNvml(2, fail={"nvmlInit": code})).list_devices()
    assert caught.value.message.startswith("nvml: initialising NVML failed: ")
    assert meaning in caught.value.message and advice in caught.value.hint


def test_a_lost_gpu_is_named_and_the_session_still_closed() -> None:
    fake = FakeNvml(2, fail={"nvmlDeviceGetMemoryInfo": pynvml_fake.NVML_ERROR_GPU_IS_LOST})
    with pytest.raises(GpuError) as caught:
        NvmlBackend(fake).list_devices()
    assert "reading GPU 0 failed: a GPU has fallen off the bus (GPU is lost)" in caught.value.message
    assert "Xid" in caught.value.hint
    assert fake.calls[-1] == "nvmlShutdown" and fake.sessions == 0


def test_a_pynvml_that_does_not_match_the_library_says_so() -> None:
    fake = FakeNvml(1, fail={"nvmlInit": pynvml_fake.NVMLLibraryMismatchError("Unversioned function called")})
    with pytest.raises(GpuError) as caught:
        NvmlBackend(fake).list_devices()
    assert "pynvml does not match the NVML library" in caught.value.message
    assert "nvidia-ml-py" in caught.value.hint


def test_an_unlisted_nvml_error_still_becomes_a_gpu_error() -> None:
    with pytest.raises(GpuError, match=r"NVML error 999 \(Unknown Error\)"):
        NvmlBackend(FakeNvml(1, fail={"nvmlDeviceGetCount": pynvml_fake.NVML_ERROR_UNKNOWN})).list_devices()


def test_a_failing_shutdown_does_not_lose_the_devices() -> None:
    fake = FakeNvml(2, fail={"nvmlShutdown": pynvml_fake.NVML_ERROR_UNKNOWN})
    assert len(NvmlBackend(fake).list_devices()) == 2


def test_the_hook_offers_nvml_because_pynvml_imports() -> None:
    (backend,) = gpu_nvml.agent_gpu_backends(settings=AgentSettings())
    assert backend.name == "nvml" and backend.library is pynvml


def test_the_fake_mirrors_real_pynvml() -> None:
    """Names, codes, signatures and class shapes the backend relies on exist in pynvml as faked."""
    for name in (
        "nvmlInit",
        "nvmlShutdown",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetName",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetMemoryInfo",
    ):
        real = list(inspect.signature(getattr(pynvml, name)).parameters)
        fake = list(inspect.signature(getattr(FakeNvml(0), name)).parameters)
        assert fake == real, name
    for name, value in vars(pynvml_fake).items():
        if name.startswith("NVML_ERROR_"):
            assert getattr(pynvml, name) == value, name
    for name in pynvml_fake.ERROR_CLASSES:
        real_class = getattr(pynvml, name)
        assert issubclass(real_class, pynvml.NVMLError)
        assert real_class().value == pynvml_fake.ERROR_CLASSES[name]().value
    assert not issubclass(pynvml.NVMLLibraryMismatchError, pynvml.NVMLError)
    assert type(pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)).__name__ == "NVMLError_GpuIsLost"
    assert [field for field, _ in pynvml.c_nvmlMemory_t._fields_] == ["total", "free", "used"]
    assert [field for field, _ in pynvml_fake.c_nvmlMemory_t._fields_] == ["total", "free", "used"]
