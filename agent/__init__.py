"""vllm-agent: run vLLM models as systemd units that are ready only when they truly serve."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

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
