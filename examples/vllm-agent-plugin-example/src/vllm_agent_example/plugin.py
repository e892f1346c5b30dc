"""The hooks: what this plugin offers the agent. Registered by the ``vllm_agent`` entry point."""

from __future__ import annotations

from collections.abc import Sequence

from vllm_agent import hookimpl
from vllm_agent.plugin_api import AgentEvent, AgentSettings, HealthStrategy, TestRunner

from .answers import AnswersRunner
from .served_model import ServedModelCheck
from .webhook import sink

VLLM_AGENT_HOOK_API = ">=1.0,<2"  # written against hook API 1.0; any 1.x keeps working


@hookimpl
def agent_health_strategies(settings: AgentSettings) -> Sequence[HealthStrategy]:
    return [ServedModelCheck()]


@hookimpl
def agent_post_start_tests(settings: AgentSettings) -> Sequence[TestRunner]:
    return [AnswersRunner()]


@hookimpl
def agent_event(event: AgentEvent) -> None:
    sink().send(event)  # queued: the daemon never waits for the webhook
