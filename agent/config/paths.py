"""Where things live per scope (system or --user). No pydantic here: `status` imports it cheaply."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_CONFIG_DIR = Path("/etc/vllm-agent")
ENV_CONFIG_DIR = "VLLM_AGENT_CONFIG_DIR"


def default_config_dir(user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "vllm-agent"
    return SYSTEM_CONFIG_DIR


def resolve_config_dir(explicit: str | Path | None, user: bool) -> Path:
    """``--config-dir``, else ``$VLLM_AGENT_CONFIG_DIR``, else the scope's default; absolute,
    because it is written into units, which systemd runs from another working directory."""
    chosen = explicit or os.environ.get(ENV_CONFIG_DIR) or default_config_dir(user)
    return Path(os.path.abspath(chosen))


def default_unit_dir(user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path("/etc/systemd/system")


def default_socket(user: bool) -> Path:
    if user:
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        return Path(runtime) / "vllm-agent" / "agent.sock"
    return Path("/run/vllm-agent/agent.sock")


def default_state_dir(user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "vllm-agent"
    return Path("/var/lib/vllm-agent")


def default_cache_dir(user: bool) -> Path:
    """Where the agent keeps downloaded models (huggingface_hub's cache layout): its own
    directory, so the service user can own it, apart from anyone's ~/.cache/huggingface."""
    if user:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "vllm-agent" / "huggingface"
    return Path("/var/cache/vllm-agent/huggingface")
