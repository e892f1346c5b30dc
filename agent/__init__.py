"""vllm-agent: run vLLM models as systemd units that are ready only when they truly serve."""

import pluggy

__version__ = "0.1.0"

PROJECT = "vllm_agent"

hookimpl = pluggy.HookimplMarker(PROJECT)
