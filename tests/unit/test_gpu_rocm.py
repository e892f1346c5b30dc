"""GPU backend "rocm": AMD devices through amdsmi, tested against tests/fakes/amdsmi_fake.py.

amdsmi is not installed here (and needs ROCm to import), so the contract test's real variant
skips unless a ROCm host runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from vllm_agent.config import AgentSettings
from vllm_agent.errors import GpuError
from vllm_agent_plugins import gpu_rocm
from vllm_agent_plugins.gpu_rocm import RocmBackend, import_amdsmi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, home of the fakes package
from fakes import amdsmi_fake  # noqa: E402
from fakes.amdsmi_fake import FakeAmdGpu, FakeAmdSmi  # noqa: E402

GiB = 1024**3


@pytest.fixture(params=["fake", "real"])  # "real" skips without ROCm (CI)
def amdsmi(request: pytest.FixtureRequest) -> object:
    if request.param == "fake":
        return FakeAmdSmi(2)
    library = import_amdsmi()
    if library is None:
        pytest.skip("real amdsmi variant: amdsmi cannot be imported (no ROCm on this host); CI has no GPU")
    return library


def test_contract_every_gpu_is_listed_with_uuid_name_and_vram(amdsmi: object) -> None:
    devices = RocmBackend(amdsmi).list_devices()
    assert [device.index for device in devices] == list(range(len(devices)))
    for device in devices:
        assert device.vendor == "amd" and device.backend == "rocm"
        assert device.uuid and device.name
        assert 0 <= device.memory_free <= device.memory_total
    assert len({device.uuid for device in devices}) == len(devices)


def test_devices_report_market_name_and_free_vram() -> None:
    w7900 = FakeAmdGpu(market_name="AMD Radeon PRO W7900", total=48 * GiB, used=8 * GiB)
    fake = FakeAmdSmi([w7900, FakeAmdGpu(market_name="N/A")])
    first, second = RocmBackend(fake).list_devices()
    assert (first.name, first.memory_total, first.memory_free) == ("AMD Radeon PRO W7900", 48 * GiB, 40 * GiB)
    assert second.name == "AMD GPU", "amdsmi's N/A is not a name"
    assert fake.calls[0] == "amdsmi_init" and fake.calls[-1] == "amdsmi_shut_down"


@pytest.mark.parametrize(
    ("code", "meaning", "advice"),
    [
        (amdsmi_fake.AMDSMI_STATUS_NO_PERM, "permission denied", "/dev/kfd"),
        (amdsmi_fake.AMDSMI_STATUS_DRIVER_NOT_LOADED, "amdgpu kernel driver is not loaded", "modprobe amdgpu"),
        (amdsmi_fake.AMDSMI_STATUS_FAIL_LOAD_MODULE, "could not be loaded", "amd-smi-lib"),
        (amdsmi_fake.AMDSMI_STATUS_INIT_ERROR, "failed to initialise", "dmesg"),
    ],
)
def test_amd_smi_start_failures_say_what_to_fix(code: int, meaning: str, advice: str) -> None:
    with pytest.raises(GpuError) as caught:
        RocmBackend(FakeAmdSmi(1, fail={"amdsmi_init": code})).list_devices()
    assert caught.value.message.startswith("rocm: initialising AMD SMI failed: ")
    assert meaning in caught.value.message and advice in caught.value.hint


def test_a_failing_gpu_is_named_and_the_session_still_closed() -> None:
    fake = FakeAmdSmi(2, fail={"amdsmi_get_gpu_memory_usage": amdsmi_fake.AMDSMI_STATUS_NOT_FOUND})
    with pytest.raises(GpuError, match="reading GPU 0 failed: the GPU was not found"):
        RocmBackend(fake).list_devices()
    assert fake.calls[-1] == "amdsmi_shut_down" and not fake.initialised


def test_a_non_library_amdsmi_error_still_becomes_a_gpu_error() -> None:
    error = amdsmi_fake.AmdSmiParameterException(3, amdsmi_fake.amdsmi_processor_handle)
    with pytest.raises(GpuError, match="rocm: listing GPUs failed: Invalid parameter"):
        RocmBackend(FakeAmdSmi(1, fail={"amdsmi_get_processor_handles": error})).list_devices()


def test_without_rocm_the_hook_offers_no_backend() -> None:
    if import_amdsmi() is not None:
        pytest.skip("amdsmi imports on this host")
    assert gpu_rocm.agent_gpu_backends(settings=AgentSettings()) == []


def test_an_amdsmi_that_fails_to_import_is_quiet_and_offers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ROCm the real package prints a message and raises KeyError at import."""
    package = tmp_path / "amdsmi"
    package.mkdir()
    tried = tmp_path / "imported"
    (package / "__init__.py").write_text(
        f"open({str(tried)!r}, 'w').close()\nprint('Unable to find libamd_smi.so')\nraise KeyError('libamd_smi.so')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    assert gpu_rocm.agent_gpu_backends(settings=AgentSettings()) == []
    assert tried.exists(), "the broken package was really imported"
    assert capsys.readouterr().out == "", "stdout is the agent's log stream"
