"""The daemon watches its GPUs: a device fault quarantines the device (in the state directory)
and stops, moves or keeps the deployments on it as each asks; /metrics shows every device.

Runs the real Daemon against the fake unit manager, with the real nvml backend over the fake
pynvml (agent/testing/pynvml_fake.py) registered as a site plugin, whose driver raises Xid events
and changes health counters when the test says so.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable

import test_daemon
from test_daemon import HangingGpus, Setup, Systemd, wait_until
from vllm_agent import hookimpl
from vllm_agent.daemon.api_client import call
from vllm_agent.daemon.main import Daemon
from vllm_agent.deployments.state import StateStore
from vllm_agent.gpu.placement import PlacementRecords
from vllm_agent.gpu.quarantine import QuarantineStore
from vllm_agent.plugin_api import AgentEvent, AgentSettings, GpuBackend
from vllm_agent.testing.pynvml_fake import FakeNvml
from vllm_agent.testing.unit_manager import FakeUnitManager
from vllm_agent.unit.notify import Notifier
from vllm_agent_plugins.gpu_nvml import NvmlBackend

# The daemon tests' fixtures: a config directory, systemd's notify socket, daemons stopped after.
short_dir, systemd, setup, running = test_daemon.short_dir, test_daemon.systemd, test_daemon.setup, test_daemon.running


class FakeGpus:
    """A site plugin: four fake NVIDIA GPUs, and every agent_event the daemon emits."""

    def __init__(self) -> None:
        self.nvml = FakeNvml(4)
        self.events: list[AgentEvent] = []

    @hookimpl
    def agent_gpu_backends(self, settings: AgentSettings) -> list[GpuBackend]:
        return [NvmlBackend(self.nvml, name="fake")]

    @hookimpl
    def agent_event(self, event: AgentEvent) -> None:
        self.events.append(event)

    def event_for(self, name: str) -> AgentEvent | None:
        return next((e for e in self.events if e.deployment == name and e.details.get("gpu")), None)


def make_daemon(setup: Setup, systemd: Systemd, units: FakeUnitManager, gpus: FakeGpus) -> Daemon:
    return Daemon(
        setup.config_dir,
        True,
        units,
        notifier=Notifier(str(systemd.path)),
        extra_plugins=[("fakegpus", gpus)],
        gpu_interval=0.2,
    )


async def watching(gpus: FakeGpus) -> None:
    """Until the daemon's Xid watch registered every device (an Xid before that goes nowhere)."""
    await wait_until("the Xid watch", lambda: gpus.nvml.calls.count("nvmlDeviceRegisterEvents") >= len(gpus.nvml.gpus))


def quarantined(setup: Setup) -> dict[str, dict]:
    return QuarantineStore(setup.config_dir.parent / "state").all()


def device_of(setup: Setup, name: str) -> str:
    (slot,) = PlacementRecords(setup.config_dir.parent / "state").get(name) or [None]
    assert slot is not None, f"{name} has no placement"
    return slot.uuid


async def test_an_xid_79_quarantines_the_device_and_each_deployment_gets_what_it_asked_for(
    setup: Setup, systemd: Systemd, running: Callable[[Daemon], asyncio.Task[int]]
) -> None:
    units, gpus = FakeUnitManager(), FakeGpus()
    for name, action in (("s", "stop"), ("m", "move"), ("k", "keep")):
        units.define(f"vllm@{name}.service")
        setup.write(name, f'model = "org/m"\ngpus = 1\non_gpu_failure = "{action}"\n')
    first = make_daemon(setup, systemd, units, gpus)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    try:
        for name in ("s", "m", "k"):
            await wait_until(f"{name} started", lambda name=name: ("start", f"vllm@{name}.service") in units.calls)
        placed = {name: device_of(setup, name) for name in ("s", "m", "k")}
        await watching(gpus)
        assert len(set(placed.values())) == 3

        # stop: the unit stops, the desired state stays "running", the reason is recorded.
        gpus.nvml.inject_xid(placed["s"], 79)
        await wait_until("s stopped", lambda: ("stop", "vllm@s.service") in units.calls)
        assert quarantined(setup)[placed["s"]]["reason"] == "Xid 79"
        saved = StateStore(setup.config_dir.parent / "state").load("s")
        assert saved.reason == f"gpu-unhealthy: {placed['s']}: Xid 79"
        event = await wait_until("the event for s", lambda: gpus.event_for("s"))
        assert (event.kind, event.reason, event.details["action"]) == ("unhealthy", saved.reason, "stop")
        reply = await asyncio.to_thread(call, setup.socket)
        (row,) = [r for r in json.loads(reply.body or "{}")["deployments"] if r["name"] == "s"]
        assert (row["state"], row["desired"]) == ("stopped", "running")
        assert f"gpu-unhealthy: {placed['s']}: Xid 79" in row["reason"]

        # move: restarted onto a device that is neither quarantined nor another's.
        gpus.nvml.inject_xid(placed["m"], 79)
        await wait_until("m restarted", lambda: ("restart", "vllm@m.service") in units.calls)
        moved = device_of(setup, "m")
        assert moved not in quarantined(setup) and moved not in placed.values()
        assert ("stop", "vllm@m.service") not in units.calls

        # keep: only the reason and the event; the unit is left alone.
        gpus.nvml.inject_xid(placed["k"], 79)
        event = await wait_until("the event for k", lambda: gpus.event_for("k"))
        assert event.details["action"] == "keep" and event.reason.startswith(f"gpu-unhealthy: {placed['k']}")
        assert [c for c in units.calls if c[1] == "vllm@k.service"] == [("start", "vllm@k.service")]
        assert set(quarantined(setup)) == {placed["s"], placed["m"], placed["k"]}
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0

    # A restarted daemon keeps the quarantine and leaves the stopped one down; a release brings it back.
    starts = units.calls.count(("start", "vllm@s.service"))
    setup.write("fresh", 'model = "org/m"\n')
    units.define("vllm@fresh.service")
    # Settled: the watch threads ended and closed their NVML sessions.
    assert first.gpu_watch.threads() == [] and gpus.nvml.sessions == 0
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("gpu-xid", "gpu-health"))]
    running(make_daemon(setup, systemd, units, gpus))
    await wait_until("the new daemon's reconcile", lambda: ("start", "vllm@fresh.service") in units.calls)
    assert units.calls.count(("start", "vllm@s.service")) == starts
    assert set(quarantined(setup)) == {placed["s"], placed["m"], placed["k"]}
    QuarantineStore(setup.config_dir.parent / "state").release(placed["s"])
    await asyncio.to_thread(call, setup.socket, "POST", "/v1/reload")  # as `gpus --release` tells the daemon
    await wait_until("s started after the release", lambda: units.calls.count(("start", "vllm@s.service")) > starts)


async def test_an_application_xid_is_counted_not_quarantined_and_metrics_show_every_device(
    setup: Setup, systemd: Systemd, running: Callable[[Daemon], asyncio.Task[int]]
) -> None:
    gpus = FakeGpus()
    running(make_daemon(setup, systemd, FakeUnitManager(), gpus))
    await watching(gpus)
    app, device = gpus.nvml.uuid_of(0), gpus.nvml.uuid_of(1)
    gpus.nvml.inject_xid(app, 13)  # a bad kernel: the engine's problem
    gpus.nvml.inject_xid(device, 79)  # fell off the bus: the device's
    await wait_until("the device fault", lambda: device in quarantined(setup))
    assert app not in quarantined(setup)  # handled in order: the 13 came first

    reply = await asyncio.to_thread(call, setup.socket, "GET", "/metrics")
    assert reply.body is not None, reply.silent
    text = reply.body.decode()
    for index in range(4):
        labels = f'backend="fake",index="{index}",uuid="{gpus.nvml.uuid_of(index)}"'
        for metric in ("memory_used_bytes", "memory_total_bytes", "temperature_celsius", "power_watts"):
            assert f"vllm_agent_gpu_{metric}{{{labels}}} " in text, (metric, text)
        xids = 1 if index in (0, 1) else 0
        assert f"vllm_agent_gpu_xid_events_total{{{labels}}} {xids}\n" in text
        assert f"vllm_agent_gpu_quarantined{{{labels}}} {int(index == 1)}\n" in text
    assert 'vllm_agent_gpu_backend_up{backend="fake"} 1' in text


async def test_new_ecc_errors_or_pending_pages_in_a_later_look_quarantine_the_device(
    setup: Setup, systemd: Systemd, running: Callable[[Daemon], asyncio.Task[int]]
) -> None:
    gpus = FakeGpus()
    gpus.nvml.gpus[3].ecc_volatile = 5  # before the daemon: placement's business, not news
    daemon = make_daemon(setup, systemd, FakeUnitManager(), gpus)
    running(daemon)
    await wait_until("the baseline look and one more", lambda: daemon.sampler.reads >= 2)
    gpus.nvml.gpus[1].ecc_volatile = 2
    gpus.nvml.gpus[2].retired_pending = True
    ecc, pages = gpus.nvml.uuid_of(1), gpus.nvml.uuid_of(2)
    await wait_until("both quarantined", lambda: {ecc, pages} <= set(quarantined(setup)))
    found = quarantined(setup)
    assert found[ecc]["reason"] == "2 new uncorrectable ECC error(s)"
    assert found[pages]["reason"] == "retired pages pending (needs a GPU reset)"
    assert set(found) == {ecc, pages}


async def test_named_devices_are_listed_off_the_loop_too(
    setup: Setup, systemd: Systemd, running: Callable[[Daemon], asyncio.Task[int]]
) -> None:
    """A deployment naming its device (gpus = [0]) waits for a hung library no longer than one
    with a count: the reconcile gives up on it and carries on."""
    units, gpus = FakeUnitManager(), HangingGpus()
    units.define("vllm@named.service")
    setup.write("named", 'model = "org/m"\ngpus = [0]\n')
    notifier = Notifier(str(systemd.path))
    daemon = Daemon(setup.config_dir, True, units, notifier=notifier, extra_plugins=[("wedged", gpus)], gpu_timeout=1.0)
    store = StateStore(setup.config_dir.parent / "state")
    try:
        running(daemon)
        await wait_until(
            "the reconcile to give up on it",
            lambda: "did not list its devices within 1s" in store.load("named").reason,
        )
        assert ("start", "vllm@named.service") not in units.calls
    finally:
        gpus.release.set()
