"""The built-in packer: `gpus = N` gets the N devices with the most free memory."""

from __future__ import annotations

import pytest
from vllm_agent import hookimpl
from vllm_agent.config.schema import AgentSettings, Deployment
from vllm_agent.errors import GpuError
from vllm_agent.plugin_api import GpuDevice
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent_plugins.packer import pick_devices

GiB = 1024**3


def gpu(index: int, free_gib: int, backend: str = "nvml") -> GpuDevice:
    vendor = "nvidia" if backend == "nvml" else "amd"
    return GpuDevice(index, f"GPU-{backend}-{index}", "GPU", vendor, 80 * GiB, free_gib * GiB, backend)


def wants(gpus: object, name: str = "llama") -> Deployment:
    return Deployment(name=name, model="acme/llama", gpus=gpus)


def test_the_devices_with_the_most_free_memory_are_chosen_in_index_order() -> None:
    devices = [gpu(0, 10), gpu(1, 70), gpu(2, 40), gpu(3, 75)]
    assert [device.index for device in pick_devices(wants(2), devices)] == [1, 3]


def test_equal_free_memory_prefers_the_lowest_index() -> None:
    devices = [gpu(3, 50), gpu(1, 50), gpu(2, 50), gpu(0, 20)]
    assert [device.index for device in pick_devices(wants(2), devices)] == [1, 2]


def test_explicit_device_lists_and_unset_gpus_are_left_to_the_caller() -> None:
    devices = [gpu(0, 80)]
    assert pick_devices(wants([0]), devices) is None
    assert pick_devices(wants(["GPU-nvml-0"]), devices) is None
    assert pick_devices(wants(None), devices) is None


def test_zero_gpus_means_none_are_assigned() -> None:
    assert pick_devices(wants(0), [gpu(0, 80)]) == []


def test_asking_for_more_gpus_than_the_host_has_says_both_numbers() -> None:
    with pytest.raises(GpuError) as caught:
        pick_devices(wants(3, name="big"), [gpu(0, 80), gpu(1, 80)])
    assert caught.value.message == "deployment big wants 3 GPUs, the host has 2"
    assert "lower `gpus` in models.d/big.toml to at most 2" in caught.value.hint


def test_a_host_where_no_backend_found_a_gpu_points_at_the_driver() -> None:
    with pytest.raises(GpuError) as caught:
        pick_devices(wants(1), [])
    assert caught.value.message == "deployment llama wants 1 GPU, the host has 0"
    assert "nvidia-smi" in caught.value.hint


def test_one_deployment_never_spans_two_vendors() -> None:
    devices = [gpu(0, 70), gpu(1, 10), gpu(0, 60, "rocm"), gpu(1, 60, "rocm")]
    chosen = pick_devices(wants(2), devices)
    assert {device.backend for device in chosen} == {"rocm"}, "60+60 free on AMD beats 70+10 on NVIDIA"
    with pytest.raises(GpuError, match="wants 3 GPUs of one kind, the host has 2 via nvml, 2 via rocm"):
        pick_devices(wants(3), devices)


def test_the_packer_runs_through_the_plugin_manager_and_a_site_plugin_overrides_it() -> None:
    devices = [gpu(0, 10), gpu(1, 70)]
    plugins = make_plugin_manager(AgentSettings())
    assert [device.index for device in plugins.select_devices(wants(1), devices)] == [1]

    class AlwaysFirst:
        @hookimpl
        def agent_select_devices(self, deployment: Deployment, devices: list[GpuDevice]) -> list[GpuDevice]:
            return devices[:1]

    site = make_plugin_manager(AgentSettings(), extra=[("site", AlwaysFirst())])
    assert [device.index for device in site.select_devices(wants(1), devices)] == [0]
