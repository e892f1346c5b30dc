"""One line per deployment, from its status fields (a DeploymentStatus as JSON, or the API's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def one_line(row: Mapping[str, Any]) -> str:
    state = row.get("state", "")
    parts = [f"{row.get('name', ''):<20} {state:<10}"]
    if state in ("ready", "unhealthy", "starting"):
        parts.append(row.get("url", ""))
    if row.get("gpus") and state != "stopped":  # a stopped deployment holds no device
        parts.append("gpu " + ",".join(str(gpu) for gpu in row["gpus"]))
    if row.get("stale"):
        parts.append("(config changed; 'vllm-agent restart' applies it)")
    if row.get("reason"):
        parts.append(row["reason"])
    if needs_operator(row):
        if row.get("hint"):
            parts.append(f"hint: {row['hint']}")
        parts.append(f"(more: vllm-agent doctor {row.get('name', '')})")
    return "  ".join(part for part in parts if part)


def exit_status(rows: list[Mapping[str, Any]]) -> int:
    """3 when something needs an operator, so scripts can alert on `vllm-agent status`."""
    return 3 if any(needs_operator(row) for row in rows) else 0


def needs_operator(row: Mapping[str, Any]) -> bool:
    if row.get("state") in ("failed", "crash-loop", "unhealthy"):
        return True
    # Wanted but not running, and nothing is starting it: after a boot without the daemon, say.
    return row.get("state") == "stopped" and row.get("desired", "running") == "running" and bool(row.get("reason"))
