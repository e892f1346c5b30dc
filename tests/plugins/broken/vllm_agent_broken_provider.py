"""Imports and registers fine; when VLLM_AGENT_TEST_BROKEN contains "provider", every provider it
offers raises a plain exception (a bug) from its methods, and its event sink raises too:
model source "broken-source", health strategy "broken-check", test runner "broken-tests",
GPU backend "brokengpu"."""

from __future__ import annotations

import os
from collections.abc import Sequence

from vllm_agent import hookimpl
from vllm_agent.errors import GpuError
from vllm_agent.plugin_api import (
    AgentEvent,
    AgentSettings,
    CheckResult,
    Deployment,
    EngineTarget,
    GpuBackend,
    GpuDevice,
    GpuSnapshot,
    HealthStrategy,
    ModelSource,
    Progress,
    ResolvedModel,
    TestContext,
    TestOutcome,
    TestRunner,
    TestSpec,
    XidWatch,
)

VLLM_AGENT_HOOK_API = ">=1.0,<2"


def _active() -> bool:
    return "provider" in os.environ.get("VLLM_AGENT_TEST_BROKEN", "").split(",")


class BrokenSource:
    name = "broken-source"

    async def resolve(self, deployment: Deployment, progress: Progress) -> ResolvedModel:
        raise RuntimeError("resolve exploded")


class BrokenCheck:
    name = "broken-check"
    deep = False

    async def check(self, target: EngineTarget, timeout: float) -> CheckResult:
        raise ZeroDivisionError("check exploded")


class BrokenTests:
    name = "broken-tests"

    def problems(self, spec: TestSpec, context: TestContext) -> Sequence[str]:
        return []

    async def run(self, target: EngineTarget, spec: TestSpec, context: TestContext) -> Sequence[TestOutcome]:
        raise KeyError("run exploded")


class BrokenGpu:
    name = "brokengpu"

    def unavailable(self) -> GpuError | None:
        return None

    def list_devices(self) -> Sequence[GpuDevice]:
        raise ValueError("list_devices exploded")

    def snapshot(self) -> Sequence[GpuSnapshot]:
        raise ValueError("snapshot exploded")

    def watch_xids(self) -> XidWatch:
        raise ValueError("watch_xids exploded")


@hookimpl
def agent_model_sources(settings: AgentSettings) -> Sequence[ModelSource]:
    return [BrokenSource()] if _active() else []


@hookimpl
def agent_health_strategies(settings: AgentSettings) -> Sequence[HealthStrategy]:
    return [BrokenCheck()] if _active() else []


@hookimpl
def agent_post_start_tests(settings: AgentSettings) -> Sequence[TestRunner]:
    return [BrokenTests()] if _active() else []


@hookimpl
def agent_gpu_backends(settings: AgentSettings) -> Sequence[GpuBackend]:
    return [BrokenGpu()] if _active() else []


@hookimpl
def agent_event(event: AgentEvent) -> None:
    if _active():
        raise RuntimeError(f"event sink exploded on {event.kind}")
