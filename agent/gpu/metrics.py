"""Per-device Prometheus metrics, read from the backends at most every ``interval`` seconds.

The daemon keeps one GpuSampler, appends ``sampler.metrics()`` to its /metrics text, and feeds
``note_xids`` from a thread that runs each backend's Xid watch. Unknown figures are left out,
as Prometheus expects, rather than written as 0.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from ..daemon.metrics import _label
from ..plugin_api import GpuBackend, GpuSnapshot, XidEvent

INTERVAL = 5.0  # seconds: NVML queries are cheap, but not free, and GPUs change slowly


@dataclass(frozen=True)
class Sample:
    taken: float  # monotonic
    devices: tuple[GpuSnapshot, ...]
    backends: Mapping[str, str | None]  # name -> None when it answered, else why not


class GpuSampler:
    """Caches one snapshot of every usable backend for ``interval`` seconds.

    :param backends: the backends by name (``Plugins.gpu_backends``), asked on every refresh.
    :param quarantined: the UUIDs currently quarantined (placement's business; none until it exists).
    """

    def __init__(
        self,
        backends: Callable[[], Mapping[str, GpuBackend]],
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        quarantined: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self._backends = backends
        self.interval = interval
        self._clock = clock
        self._quarantined = quarantined
        self._lock = threading.Lock()  # the Xid counts: note_xids() from a thread, metrics() from another
        self._reading = threading.Lock()  # one library read at a time; never held by note_xids()
        self._sample: Sample | None = None
        self.xids: Counter[str] = Counter()  # UUID -> Xid events seen since the daemon started
        self.reads = 0  # how often the backends were really asked (the cache's evidence)

    def sample(self) -> Sample:
        with self._reading:  # a second caller waits for this read rather than reading again
            now = self._clock()
            if self._sample is None or now - self._sample.taken >= self.interval:
                self._sample = self._read(now)
            return self._sample

    def _read(self, now: float) -> Sample:
        self.reads += 1
        devices: list[GpuSnapshot] = []
        states: dict[str, str | None] = {}
        for name, backend in self._backends().items():
            error = backend.unavailable()
            if error is None:
                try:
                    devices += backend.snapshot()
                except Exception as err:  # one broken backend must not take the others' metrics away
                    error = err
            states[name] = None if error is None else str(getattr(error, "message", error))
        return Sample(now, tuple(devices), states)

    def note_xids(self, events: Iterable[XidEvent]) -> None:
        with self._lock:
            self.xids.update(event.uuid for event in events)

    def metrics(self, *, refresh: bool = True) -> str:
        """The metrics text. ``refresh=False``: from the last sample, never asking a library (the
        daemon's health thread keeps it fresh; a hung library must not hang a scrape)."""
        sample = self.sample() if refresh else (self._sample or Sample(self._clock(), (), {}))
        with self._lock:
            xids = dict(self.xids)
        return render_gpu_metrics(sample, xids, set(self._quarantined()))


_GAUGES: list[tuple[str, str, Callable[[GpuSnapshot], float | int | None]]] = [
    ("memory_used_bytes", "Device memory in use.", lambda d: d.memory_used),
    ("memory_total_bytes", "Device memory in all.", lambda d: d.memory_total if not d.health.error else None),
    ("utilization_ratio", "Share of time the compute engine was busy (0-1).", lambda d: _ratio(d.utilisation)),
    ("temperature_celsius", "GPU temperature.", lambda d: d.temperature),
    ("power_watts", "Power draw.", lambda d: d.power_draw),
    ("power_limit_watts", "Enforced power limit.", lambda d: d.power_limit),
    ("healthy", "1 when the device reports no health problem.", lambda d: int(d.health.ok)),
]


def render_gpu_metrics(sample: Sample, xids: Mapping[str, int], quarantined: Collection[str]) -> str:
    lines = [
        "# HELP vllm_agent_gpu_backend_up 1 when the GPU backend answered, 0 when it is unavailable.",
        "# TYPE vllm_agent_gpu_backend_up gauge",
    ]
    for name, error in sample.backends.items():
        lines.append(f'vllm_agent_gpu_backend_up{{backend="{_label(name)}"}} {int(error is None)}')
    labels = {device: _device_labels(device) for device in sample.devices}
    for metric, text, value in _GAUGES:
        lines += [f"# HELP vllm_agent_gpu_{metric} {text}", f"# TYPE vllm_agent_gpu_{metric} gauge"]
        for device in sample.devices:
            if (figure := value(device)) is not None:
                lines.append(f"vllm_agent_gpu_{metric}{{{labels[device]}}} {_number(figure)}")
    lines += [
        "# HELP vllm_agent_gpu_ecc_uncorrected_errors Uncorrectable ECC errors (volatile: since the last reset).",
        "# TYPE vllm_agent_gpu_ecc_uncorrected_errors gauge",
    ]
    for device in sample.devices:
        for counter, count in (
            ("volatile", device.health.ecc_uncorrected_volatile),
            ("aggregate", device.health.ecc_uncorrected_aggregate),
        ):
            if count is not None:
                lines.append(f'vllm_agent_gpu_ecc_uncorrected_errors{{{labels[device]},counter="{counter}"}} {count}')
    lines += [
        "# HELP vllm_agent_gpu_xid_events_total Xid (critical driver error) events seen by the agent.",
        "# TYPE vllm_agent_gpu_xid_events_total counter",
    ]
    lines += [f"vllm_agent_gpu_xid_events_total{{{labels[d]}}} {xids.get(d.uuid, 0)}" for d in sample.devices]
    lines += [
        "# HELP vllm_agent_gpu_quarantined 1 when the agent keeps new deployments off the device.",
        "# TYPE vllm_agent_gpu_quarantined gauge",
    ]
    lines += [f"vllm_agent_gpu_quarantined{{{labels[d]}}} {int(d.uuid in quarantined)}" for d in sample.devices]
    return "\n".join(lines) + "\n"


def _device_labels(device: GpuSnapshot) -> str:
    return f'backend="{_label(device.backend)}",index="{device.index}",uuid="{_label(device.uuid)}"'


def _ratio(percent: int | None) -> float | None:
    return None if percent is None else percent / 100


def _number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
