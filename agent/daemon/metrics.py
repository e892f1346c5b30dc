"""Prometheus text for the daemon's /metrics: deployment state, restarts, health, time to ready."""

from __future__ import annotations

from collections.abc import Iterable

from ..deployments.state import DeploymentState
from ..deployments.status import DeploymentStatus

STATES = ("stopped", "starting", "ready", "unhealthy", "failed", "crash-loop")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render_metrics(rows: Iterable[tuple[DeploymentStatus, DeploymentState, int]]) -> str:
    """rows: (status, saved state, failed health checks counted by the daemon)."""
    lines = [
        "# HELP vllm_agent_deployment_state 1 for the state each deployment is in.",
        "# TYPE vllm_agent_deployment_state gauge",
    ]
    rows = list(rows)
    for status, _, _ in rows:
        for state in STATES:
            lines.append(
                f'vllm_agent_deployment_state{{deployment="{_label(status.name)}",state="{state}"}} '
                f"{1 if status.state == state else 0}"
            )
    lines += [
        "# HELP vllm_agent_restarts_total Automatic restarts by systemd.",
        "# TYPE vllm_agent_restarts_total counter",
    ]
    lines += [f'vllm_agent_restarts_total{{deployment="{_label(s.name)}"}} {s.restarts}' for s, _, _ in rows]
    lines += [
        "# HELP vllm_agent_time_to_ready_seconds From the start of the last invocation to ready.",
        "# TYPE vllm_agent_time_to_ready_seconds gauge",
    ]
    for status, saved, _ in rows:
        if saved.ready_at and saved.started_at and saved.ready_at >= saved.started_at:
            lines.append(
                f'vllm_agent_time_to_ready_seconds{{deployment="{_label(status.name)}"}} '
                f"{saved.ready_at - saved.started_at:.3f}"
            )
    lines += [
        "# HELP vllm_agent_health_check_seconds Latency of the last run of each health check.",
        "# TYPE vllm_agent_health_check_seconds gauge",
    ]
    for status, saved, _ in rows:
        for record in saved.health:
            lines.append(
                f'vllm_agent_health_check_seconds{{deployment="{_label(status.name)}",'
                f'check="{_label(str(record.get("name", "")))}"}} {float(record.get("latency", 0.0)):.4f}'
            )
    lines += [
        "# HELP vllm_agent_health_check_failures_total Failed health checks seen by the daemon.",
        "# TYPE vllm_agent_health_check_failures_total counter",
    ]
    lines += [f'vllm_agent_health_check_failures_total{{deployment="{_label(s.name)}"}} {f}' for s, _, f in rows]
    return "\n".join(lines) + "\n"
