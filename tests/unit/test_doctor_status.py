"""`status` keeps one line per deployment and points to `vllm-agent doctor NAME` when an operator is needed."""

from __future__ import annotations

import pytest
from vllm_agent.deployments.statusline import one_line


@pytest.mark.parametrize(
    "row",
    [
        {"name": "big", "state": "failed", "reason": "the engine ran out of GPU memory", "hint": "lower max_model_len"},
        {"name": "big", "state": "crash-loop", "reason": "crash-loop: 3 starts in a row never became ready"},
        {"name": "big", "state": "stopped", "desired": "running", "reason": "wanted, not running: stopped outside"},
    ],
)
def test_a_deployment_that_needs_an_operator_points_to_doctor(row: dict) -> None:
    line = one_line(row)
    assert "\n" not in line
    assert line.endswith("(more: vllm-agent doctor big)")
    assert row["reason"] in line


@pytest.mark.parametrize(
    "row",
    [
        {"name": "ok", "state": "ready", "url": "http://127.0.0.1:8001"},
        {"name": "ok", "state": "stopped", "desired": "stopped"},
        {"name": "ok", "state": "starting", "reason": "loading weights 3/8 shards"},
    ],
)
def test_a_fine_deployment_does_not(row: dict) -> None:
    assert "doctor" not in one_line(row)
