"""The daemon's eyes on its devices: an Xid watch per backend and a periodic health look.

Vendor libraries block (an Xid wait) and can hang (a wedged driver), so each watch runs in a
thread of its own, never on the event loop nor in its default executor. What they find is
handed to the loop as a DeviceFault; quarantining and acting on it is agent/gpu/failures.py.

The first health look is the baseline: what was wrong before the daemon started is placement's
business (it skips sick devices); the daemon quarantines what goes wrong while it watches.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from ..plugin_api import GpuBackend, GpuSnapshot, XidEvent
from .metrics import GpuSampler, Sample
from .quarantine import device_fault, new_problem

XID_WAIT = 1.0  # seconds one Xid wait blocks: the longest a stop waits for a watch thread


@dataclass(frozen=True)
class DeviceFault:
    uuid: str
    reason: str  # "Xid 79", "3 new uncorrectable ECC error(s)", ...


class GpuWatch:
    """Starts the threads; ``report`` gets each fault on the event loop, in the order found."""

    def __init__(
        self,
        sampler: GpuSampler,
        report: Callable[[DeviceFault], None],
        log: FilteringBoundLogger,
        *,
        wait: float = XID_WAIT,
    ) -> None:
        self.sampler = sampler
        self.report = report
        self.log = log
        self.wait = wait
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, backends: Mapping[str, GpuBackend]) -> None:
        """From the event loop: one Xid thread per backend, one health thread for all."""
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        for name, backend in backends.items():
            self._spawn(f"gpu-xid-{name}", self._watch_xids, name, backend)
        self._spawn("gpu-health", self._watch_health)

    def stop(self) -> None:
        """Blocking (call it in a thread): ends the threads, each within about one wait. A thread
        stuck in a hung library is left behind (it is a daemon thread) and named in the log."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(self.wait + 2.0)
            if thread.is_alive():
                self.log.warning("GPU watch thread did not end (library hung?)", thread=thread.name)
        self._threads = [thread for thread in self._threads if thread.is_alive()]

    def threads(self) -> list[threading.Thread]:
        return [thread for thread in self._threads if thread.is_alive()]

    # Threads ---------------------------------------------------------------------------------

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _watch_xids(self, name: str, backend: GpuBackend) -> None:
        try:
            if backend.unavailable() is not None:
                return  # no driver here: nothing to watch (the sampler says so in /metrics)
            watch = backend.watch_xids()
        except Exception as err:
            self.log.warning("GPU Xid events not watched", backend=name, error=_text(err))
            return
        self.log.info("GPU Xid events watched", backend=name)
        try:
            while not self._stopping.is_set():
                try:
                    events = list(watch.wait(self.wait))
                except Exception as err:
                    self.log.error("GPU Xid watch failed; no more Xid events from it", backend=name, error=_text(err))
                    return
                if events:
                    self.sampler.note_xids(events)
                    for event in events:
                        self._xid(name, event)
        finally:
            try:
                watch.close()
            except Exception:  # nothing to act on at close
                pass

    def _xid(self, backend: str, event: XidEvent) -> None:
        if not device_fault(event.xid):
            self.log.warning("GPU Xid: an application error, the engine's problem", gpu=event.uuid, xid=event.xid)
        elif not event.uuid:
            self.log.error("GPU Xid on a device that cannot be named; not quarantined", backend=backend, xid=event.xid)
        else:
            self._hand(DeviceFault(event.uuid, f"Xid {event.xid}"))

    def _watch_health(self) -> None:
        before: dict[str, GpuSnapshot] | None = None
        while True:
            try:
                sample = self.sampler.sample()
            except Exception as err:  # a plugin bug: say so, look again next time
                self.log.error("GPU health look failed", error=_text(err))
            else:
                if before is not None:
                    for fault in changes(before, sample):
                        self._hand(fault)
                before = merge(before or {}, sample)
            if self._stopping.wait(self.sampler.interval):
                return

    def _hand(self, fault: DeviceFault) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self.report, fault)
        except RuntimeError:
            pass  # the loop closed: the daemon is gone, and the quarantine with it


def changes(before: Mapping[str, GpuSnapshot], sample: Sample) -> list[DeviceFault]:
    """New problems since ``before`` (UUID -> snapshot): a device of a backend that answered is
    gone or newly sick. A backend that did not answer says nothing about its devices."""
    answered = {name for name, error in sample.backends.items() if error is None}
    now = {device.uuid: device for device in sample.devices if device.uuid}
    faults = []
    for uuid, device in before.items():
        if device.backend in answered and uuid not in now:
            faults.append(DeviceFault(uuid, "lost: no longer listed by the driver"))
        elif uuid in now and (problem := new_problem(device.health, now[uuid].health)):
            faults.append(DeviceFault(uuid, problem))
    return faults


def merge(before: Mapping[str, GpuSnapshot], sample: Sample) -> dict[str, GpuSnapshot]:
    """The next baseline: this sample's devices, and the last known ones of a silent backend."""
    answered = {name for name, error in sample.backends.items() if error is None}
    kept = {uuid: device for uuid, device in before.items() if device.backend not in answered}
    return kept | {device.uuid: device for device in sample.devices if device.uuid}


def _text(err: BaseException) -> str:
    return str(getattr(err, "message", None) or repr(err))
