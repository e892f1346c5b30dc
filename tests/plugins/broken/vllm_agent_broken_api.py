"""Declares a hook API range that excludes every 1.x when VLLM_AGENT_TEST_BROKEN contains "api";
then it would offer the model source "broken-api", but the host must refuse it first."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from vllm_agent import hookimpl
from vllm_agent.plugin_api import AgentSettings, Deployment, ModelSource, Progress, ResolvedModel


def _active() -> bool:
    return "api" in os.environ.get("VLLM_AGENT_TEST_BROKEN", "").split(",")


def __getattr__(name: str) -> Any:
    # Read at registration, so one installed package can be compatible or not per test.
    if name == "VLLM_AGENT_HOOK_API":
        return ">=2.0,<3" if _active() else ">=1.0,<2"
    raise AttributeError(name)


class NeverSource:
    name = "broken-api"

    async def resolve(self, deployment: Deployment, progress: Progress) -> ResolvedModel:
        raise AssertionError("a refused plugin's provider must never be called")


@hookimpl
def agent_model_sources(settings: AgentSettings) -> Sequence[ModelSource]:
    return [NeverSource()] if _active() else []
