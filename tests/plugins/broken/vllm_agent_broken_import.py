"""Fails to import when VLLM_AGENT_TEST_BROKEN contains "import" (a missing dependency, say)."""

from __future__ import annotations

import os

if "import" in os.environ.get("VLLM_AGENT_TEST_BROKEN", "").split(","):
    raise ImportError("No module named 'vllm_agent_broken_dependency' (broken on purpose)")
