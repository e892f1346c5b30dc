"""vllm-agent: run vLLM models as systemd units that are ready only when they truly serve."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

HOOK_API_VERSION = "1.0"
"""The version of the hook and provider Protocol surface (docs/plugins.md). A minor step adds
(a hook, an optional parameter, a provider method with a default); a major step breaks. A plugin
declares what it supports as ``VLLM_AGENT_HOOK_API = ">=1.0,<2"`` on its registered module."""

HOOK_API_ATTRIBUTE = "VLLM_AGENT_HOOK_API"

PROJECT = "vllm_agent"


def __getattr__(name: str) -> Any:
    # `from vllm_agent import hookimpl` for plugins; built on first use so that commands that
    # need no plugins (a quick `status`) do not import pluggy.
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker(PROJECT)
        globals()["hookimpl"] = marker
        return marker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
