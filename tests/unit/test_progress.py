"""The progress line: live on a terminal, quiet lines in a log."""

from __future__ import annotations

import io

from vllm_agent.progress import ProgressLine


def test_a_log_gets_a_line_per_real_change_not_per_tick() -> None:
    out = io.StringIO()
    progress = ProgressLine(out)
    for second in range(5):
        progress(f"waiting for health: engine loading ({second}s)")
    progress("running post-start tests: openai-smoke")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("engine loading (0s)") and lines[1].endswith("running post-start tests: openai-smoke")
