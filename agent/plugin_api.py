"""The value types and Protocols that plugins see.

Hooks are cheap and synchronous; they return provider objects. Providers do their I/O in async
methods. Every provider has a ``name`` that configuration selects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from .config import AgentSettings, Deployment, TestSpec

Progress = Callable[[str], None]
"""Reports a short human line about long work (shown in ``systemctl status``)."""


@dataclass(frozen=True)
class GpuDevice:
    index: int
    uuid: str
    name: str
    vendor: Literal["nvidia", "amd"] | str
    memory_total: int  # bytes
    memory_free: int  # bytes
    backend: str = ""


@runtime_checkable
class GpuBackend(Protocol):
    name: str

    def list_devices(self) -> Sequence[GpuDevice]:
        """The devices on this host; raise GpuError with a hint when the library fails."""
        ...


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # a local directory vLLM can load
    description: str  # what an operator should read, e.g. "org/name@rev from the HF cache"


@runtime_checkable
class ModelSource(Protocol):
    name: str

    async def resolve(self, deployment: Deployment, progress: Progress) -> ResolvedModel:
        """Make the model available locally and return where it is.

        Raise ModelNotFound or ModelSourceError with a hint an operator can act on.
        """
        ...


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
    "EngineTarget",
    "GpuBackend",
    "GpuDevice",
    "HealthStrategy",
    "ModelSource",
    "Progress",
    "ResolvedModel",
    "TestContext",
    "TestOutcome",
    "TestRunner",
    "TestSpec",
    "UnitDirectives",
]
