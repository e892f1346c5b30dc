"""GPU backend "rocm": AMD devices through amdsmi, tested against agent/testing/amdsmi_fake.py.

amdsmi is not installed here (and needs ROCm to import), so the contract test's real variant
skips unless a ROCm host runs it.
"""

from __future__ import annotations

import enum
import inspect
import sys
from pathlib import Path

import pytest
from vllm_agent.config.schema import AgentSettings
from vllm_agent.errors import GpuError
from vllm_agent_plugins import gpu_rocm
from vllm_agent_plugins.gpu_rocm import RocmBackend, import_amdsmi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, home of the fakes package
from vllm_agent.testing import amdsmi_fake  # noqa: E402
from vllm_agent.testing.amdsmi_fake import FakeAmdGpu, FakeAmdSmi  # noqa: E402

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


def test_contract_a_snapshot_reads_every_device_without_failing(amdsmi: object) -> None:
    backend = RocmBackend(amdsmi)
    assert backend.unavailable() is None
    snapshots = backend.snapshot()
    assert [s.uuid for s in snapshots] == [d.uuid for d in backend.list_devices()]
    for snapshot in snapshots:
        assert snapshot.health.error is None and snapshot.pci_bus_id
        assert snapshot.memory_used is not None and snapshot.memory_used <= snapshot.memory_total


def test_a_snapshot_has_activity_temperature_power_processes_and_health() -> None:
    gpu = FakeAmdGpu(
        uuid="a1",
        bdf="0000:c1:00.0",
        used=8 * GiB,
        activity=63,
        hotspot=71,
        power=402,
        power_limit=750,
        processes=[(4242, 6 * GiB)],
    )
    (snap,) = RocmBackend(FakeAmdSmi([gpu])).snapshot()
    assert (snap.uuid, snap.pci_bus_id, snap.memory_used) == ("a1", "0000:c1:00.0", 8 * GiB)
    assert (snap.utilisation, snap.temperature, snap.power_draw, snap.power_limit) == (63, 71, 402, 750)
    assert [(p.pid, p.used_memory) for p in snap.processes] == [(4242, 6 * GiB)]
    assert snap.health.ok and snap.health.ecc_uncorrected_volatile == 0 and snap.health.retired_pages_pending is False
    assert snap.mig_enabled is None, "AMD partitions are not MIG"


def test_uncorrectable_ecc_and_pending_bad_pages_are_health_problems() -> None:
    fake = FakeAmdSmi([FakeAmdGpu(ecc_uncorrectable=4), FakeAmdGpu(pending_bad_pages=2)])
    ecc, pages = RocmBackend(fake).snapshot()
    assert ecc.health.problems == ["4 uncorrectable ECC error(s) since the last reset"]
    assert pages.health.problems == ["retired pages pending (needs a GPU reset)"]


def test_amdsmi_n_a_and_unsupported_queries_are_unknown_not_fatal() -> None:
    unanswered = {
        "amdsmi_get_gpu_process_list": amdsmi_fake.AMDSMI_STATUS_NO_PERM,
        "amdsmi_get_gpu_total_ecc_count": amdsmi_fake.AMDSMI_STATUS_NOT_SUPPORTED,
    }
    gpu = FakeAmdGpu(activity="N/A", power="N/A", hotspot=None, edge=None, fail=unanswered)
    first, second = RocmBackend(FakeAmdSmi([gpu, FakeAmdGpu()])).snapshot()
    assert (first.utilisation, first.power_draw, first.temperature, first.processes) == (None, None, None, None)
    assert first.health.ecc_uncorrected_volatile is None and first.health.error is None
    assert first.power_limit == 750 and first.memory_total == 192 * GiB
    assert second.temperature == 40 and second.utilisation == 0


def test_a_gpu_without_hotspot_sensor_reports_its_edge_temperature() -> None:
    (snap,) = RocmBackend(FakeAmdSmi([FakeAmdGpu(hotspot=None, edge=55)])).snapshot()
    assert snap.temperature == 55


def test_an_unreadable_gpu_is_marked_and_the_others_still_read() -> None:
    missing = {"amdsmi_get_gpu_memory_total": amdsmi_fake.AMDSMI_STATUS_NOT_FOUND}
    fake = FakeAmdSmi([FakeAmdGpu(fail=missing), FakeAmdGpu()])
    broken, fine = RocmBackend(fake).snapshot()
    assert broken.health.error and broken.health.error.startswith("the GPU was not found")
    assert fine.health.ok and fine.memory_total == 192 * GiB
    assert not fake.initialised


def test_without_rocm_runtime_the_backend_is_unavailable_once_with_the_reason() -> None:
    fake = FakeAmdSmi(1, fail={"amdsmi_init": amdsmi_fake.AMDSMI_STATUS_DRIVER_NOT_LOADED})
    backend = RocmBackend(fake)
    first = backend.unavailable()
    assert first is backend.unavailable() and "amdgpu kernel driver is not loaded" in first.message
    assert fake.calls == ["amdsmi_init"]


def test_amd_gpus_have_no_xid_events_so_the_watch_just_waits() -> None:
    with RocmBackend(FakeAmdSmi(1)).watch_xids() as watch:
        assert watch.wait(0.01) == []


def used_names() -> tuple[FakeAmdSmi, set[str]]:
    """The fake, and every name the backend reads from its library in all its calls."""
    fake = FakeAmdSmi([FakeAmdGpu(processes=[(1, GiB)], hotspot=None, edge=50)])
    used: set[str] = set()

    class Recording:
        def __getattr__(self, name: str) -> object:
            used.add(name)
            return getattr(fake, name)

    backend = RocmBackend(Recording())
    backend.unavailable()
    backend.list_devices()
    backend.snapshot()
    return fake, used


def test_the_fake_matches_real_amdsmi_names_and_signatures() -> None:
    fake, used = used_names()
    assert {"amdsmi_get_gpu_process_list", "amdsmi_get_temp_metric", "amdsmi_get_gpu_bad_page_info"} <= used
    real = import_amdsmi()
    if real is None:
        pytest.skip("real amdsmi variant: amdsmi cannot be imported (no ROCm on this host); CI has no GPU")
    for name in sorted(used):
        real_value, fake_value = getattr(real, name), getattr(fake, name)
        if inspect.isfunction(real_value):
            real_params = list(inspect.signature(real_value).parameters)
            assert list(inspect.signature(fake_value).parameters) == real_params, name
        elif isinstance(real_value, type) and issubclass(real_value, enum.Enum):
            faked = {member.name: member.value for member in fake_value}
            assert faked.items() <= {member.name: member.value for member in real_value}.items(), name


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
