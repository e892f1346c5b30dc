"""The value types and Protocols that plugins see.

Hooks are cheap and synchronous; they return provider objects. Providers do their I/O in async
methods. Every provider has a ``name`` that configuration selects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from .config.schema import AgentSettings, Deployment, TestSpec
from .errors import GpuError

Progress = Callable[[str], None]
"""Reports a short human line about long work (shown in ``systemctl status``)."""


@dataclass(frozen=True)
class GpuDevice:
    """What placement needs: which device, and how much memory is free on it."""

    index: int
    uuid: str
    name: str
    vendor: Literal["nvidia", "amd"] | str
    memory_total: int  # bytes
    memory_free: int  # bytes
    backend: str = ""


# In the types below, None means "unknown": the driver or device does not report it (a query
# answered NotSupported or NoPermission). One unanswered query never hides the rest of a device.


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a device, as the driver reports it."""

    pid: int
    used_memory: int | None = None  # bytes


@dataclass(frozen=True)
class MigInstance:
    """A MIG device (an NVIDIA GPU partition); its UUID works in CUDA_VISIBLE_DEVICES."""

    index: int
    uuid: str
    memory_total: int | None = None  # bytes
    memory_used: int | None = None  # bytes


@dataclass(frozen=True)
class DeviceHealth:
    """Counters that tell a device needs attention. ``error``: the device could not be read."""

    ecc_uncorrected_volatile: int | None = None  # since the last driver load or GPU reset
    ecc_uncorrected_aggregate: int | None = None  # over the device's lifetime
    retired_pages_pending: bool | None = None  # pages waiting for a reset to be retired
    remapped_rows_pending: bool | None = None  # rows waiting for a reset to be remapped
    remapping_failed: bool | None = None  # a row could not be remapped: the GPU needs service
    error: str | None = None  # e.g. "GPU is lost"

    @property
    def problems(self) -> list[str]:
        """One short line per reason this device should not take new work."""
        found = [f"cannot be read: {self.error}"] if self.error else []
        if self.ecc_uncorrected_volatile:
            found.append(f"{self.ecc_uncorrected_volatile} uncorrectable ECC error(s) since the last reset")
        if self.retired_pages_pending:
            found.append("retired pages pending (needs a GPU reset)")
        if self.remapped_rows_pending:
            found.append("row remapping pending (needs a GPU reset)")
        if self.remapping_failed:
            found.append("row remapping failed (the GPU needs service)")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class GpuSnapshot(GpuDevice):
    """Everything a backend read from one device at one moment. A GpuDevice, so placement can
    take snapshots where it takes devices."""

    pci_bus_id: str | None = None  # "00000000:3B:00.0" (NVIDIA) or "0000:c1:00.0" (AMD BDF)
    memory_used: int | None = None  # bytes
    utilisation: int | None = None  # percent of time the compute engine was busy
    temperature: int | None = None  # degrees Celsius
    power_draw: float | None = None  # watts
    power_limit: float | None = None  # watts
    mig_enabled: bool | None = None
    mig_instances: tuple[MigInstance, ...] = ()
    processes: tuple[GpuProcess, ...] | None = None
    health: DeviceHealth = field(default_factory=DeviceHealth)


@dataclass(frozen=True)
class XidEvent:
    """A critical error the NVIDIA driver reported for a device (an "Xid"), e.g. 79: fell off the bus."""

    uuid: str
    xid: int


@runtime_checkable
class XidWatch(Protocol):
    """Waits for Xid events; made by ``GpuBackend.watch_xids()``, used from one thread."""

    def wait(self, timeout: float) -> Sequence[XidEvent]:
        """Block up to ``timeout`` seconds; return the events that arrived (often none)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class GpuBackend(Protocol):
    name: str

    def unavailable(self) -> GpuError | None:
        """Why this backend cannot be used on this host (no driver, no library), or None.

        Probed on the first call and remembered: a host without the driver says so once.
        """
        ...

    def list_devices(self) -> Sequence[GpuDevice]:
        """The devices on this host, cheaply (memory only); raise GpuError with a hint when the
        library fails."""
        ...

    def snapshot(self) -> Sequence[GpuSnapshot]:
        """Every device with memory, utilisation, temperature, power, processes, MIG and health.

        Raise GpuError only when the library as a whole fails; a device that cannot be read is
        returned with ``health.error`` set, and an unanswered query leaves its field None.
        """
        ...

    def watch_xids(self) -> XidWatch:
        """Start watching every device for Xid events (run ``wait`` in a thread)."""
        ...


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # a local directory vLLM can load
    description: str  # what an operator should read, e.g. "org/name@rev from the HF cache"
    revision: str = ""  # the commit it resolved to, where the source knows one (status --json)


@runtime_checkable
class ModelSource(Protocol):
    name: str

    async def resolve(self, deployment: Deployment, progress: Progress) -> ResolvedModel:
        """Make the model available locally and return where it is.

        Raise ModelNotFound or ModelSourceError with a hint an operator can act on.
        """
        ...


@dataclass(frozen=True)
class VerifiedModel:
    """What a verification of a local model directory found (every check passed)."""

    path: Path
    summary: str  # e.g. "4 weight files, 1.0 GB, 9 checksums ok"
    weight_files: int
    size: int  # bytes of weights
    checksums: int  # files whose checksum was compared
    hashed: int  # of those, files read now
    cached: int  # of those, files the hash cache answered for (unchanged size and mtime)


@runtime_checkable
class VerifyingSource(Protocol):
    """A source that can check a deployment's local copy on demand (``vllm-agent verify``),
    without downloading anything."""

    name: str

    async def verify(self, deployment: Deployment, progress: Progress, *, force: bool = False) -> VerifiedModel: ...


@dataclass(frozen=True)
class LocalModel:
    """A model a source can serve from this host without a download (``vllm-agent models``)."""

    source: str
    id: str  # "org/name", or the directory for a plain model directory
    revision: str | None  # the commit; None for a plain directory
    refs: tuple[str, ...]  # branch or tag names pointing at it ("main")
    path: Path
    size: int  # bytes, following symlinks
    verified: bool  # the last verify passed and no file changed since
    used_by: tuple[str, ...] = ()  # deployments that resolve to it


@runtime_checkable
class LocalCatalog(Protocol):
    """A source that can list what it serves locally; cheap: no hashing, no network.
    ``deployments`` are the configured ones: a source may list what they name (``local``)."""

    name: str

    def local_models(self, deployments: Sequence[Deployment]) -> Sequence[LocalModel]: ...


@dataclass(frozen=True)
class EngineTarget:
    """How a health check or test reaches a running engine."""

    deployment: str
    url: str  # base URL, no trailing slash, e.g. http://127.0.0.1:8000
    served_model_name: str
    api_key: str | None = field(default=None, repr=False)  # from the api_key credential

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str = ""
    latency: float = 0.0  # seconds


@runtime_checkable
class HealthStrategy(Protocol):
    name: str
    deep: bool  # expensive checks run every ``deep_interval`` instead of every ``interval``

    async def check(self, target: EngineTarget, timeout: float) -> CheckResult: ...


@dataclass(frozen=True)
class TestOutcome:
    __test__ = False

    name: str
    ok: bool
    detail: str = ""
    duration: float = 0.0
    output: str = ""


@dataclass(frozen=True)
class TestContext:
    __test__ = False

    config_dir: Path
    deployment: Deployment


@runtime_checkable
class TestRunner(Protocol):
    __test__ = False

    name: str

    def problems(self, spec: TestSpec, context: TestContext) -> Sequence[str]:
        """Configuration problems with ``spec`` (found by ``validate``, before any start)."""
        ...

    async def run(self, target: EngineTarget, spec: TestSpec, context: TestContext) -> Sequence[TestOutcome]: ...


EventKind = Literal["starting", "ready", "unhealthy", "restarted", "failed", "crash-loop", "stopped"]


@dataclass(frozen=True)
class AgentEvent:
    deployment: str
    kind: EventKind
    reason: str
    timestamp: float
    details: Mapping[str, Any] = field(default_factory=dict)


UnitDirectives = Mapping[str, Sequence[str]]
"""Extra unit lines per section, e.g. ``{"Service": ["LimitNOFILE=65536"]}``."""

__all__ = [
    "AgentEvent",
    "AgentSettings",
    "CheckResult",
    "Deployment",
    "DeviceHealth",
    "EngineTarget",
    "GpuBackend",
    "GpuDevice",
    "GpuError",
    "GpuProcess",
    "GpuSnapshot",
    "HealthStrategy",
    "LocalCatalog",
    "LocalModel",
    "MigInstance",
    "ModelSource",
    "Progress",
    "ResolvedModel",
    "TestContext",
    "TestOutcome",
    "TestRunner",
    "TestSpec",
    "UnitDirectives",
    "VerifiedModel",
    "VerifyingSource",
    "XidEvent",
    "XidWatch",
]
