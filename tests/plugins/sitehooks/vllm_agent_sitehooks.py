"""A site's policy plugin, for tests: extra unit directives for every deployment.

Registered by entry point like any third-party plugin. Without $VLLM_AGENT_TEST_DIRECTIVES it
adds nothing; with it, a JSON object such as ``{"Service": ["CPUWeight=42"]}``.
"""

from __future__ import annotations

import json
import os

from vllm_agent import hookimpl
from vllm_agent.plugin_api import AgentSettings, Deployment

ENV = "VLLM_AGENT_TEST_DIRECTIVES"


@hookimpl
def agent_unit_directives(deployment: Deployment, settings: AgentSettings) -> dict[str, list[str]] | None:
    raw = os.environ.get(ENV)
    return {section: list(lines) for section, lines in json.loads(raw).items()} if raw else None
