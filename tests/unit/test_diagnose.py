"""Engine output to one line an operator can act on, and whether a restart can help."""

from __future__ import annotations

import pytest
from vllm_agent.doctor.diagnose import diagnose

# The last lines real vLLM 0.32 prints for a misspelt flag (measured in tests/vllm) and the
# fake engine's copy of them.
UNKNOWN_FLAG = [
    "usage: api_server.py [-h] [--headless] ...",
    "api_server.py: error: unrecognized arguments: --served-modle-name tiny",
]


def test_an_unknown_engine_flag_is_permanent_and_names_the_flag() -> None:
    found = diagnose(UNKNOWN_FLAG, 2)
    assert found.permanent  # exit 78: restarting the same command line cannot help
    assert found.reason == (
        "the engine refused its command line: api_server.py: error: unrecognized arguments: --served-modle-name tiny"
    )
    assert "vllm-agent render NAME" in found.hint


@pytest.mark.parametrize(
    "line",
    [
        "api_server.py: error: argument --max-model-len: invalid int value: 'lots'",
        "api_server.py: error: the following arguments are required: --model",
    ],
)
def test_a_malformed_engine_flag_is_permanent(line: str) -> None:
    assert diagnose([line], 2).permanent


def test_an_unrecognised_crash_is_restartable_with_its_last_error_line() -> None:
    found = diagnose(["INFO starting", "RuntimeError: Engine core initialization failed"], 1)
    assert not found.permanent
    assert found.reason == "the engine exited with status 1: RuntimeError: Engine core initialization failed"
