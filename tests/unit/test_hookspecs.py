"""Plugin authors read the hookspecs: every hook and every parameter must be documented."""

from __future__ import annotations

import inspect
import re

from vllm_agent import hookspecs


def hooks() -> list[tuple[str, object]]:
    return [(name, fn) for name, fn in vars(hookspecs).items() if name.startswith("agent_") and callable(fn)]


def test_every_hook_has_the_project_prefix_and_a_docstring() -> None:
    assert len(hooks()) >= 7
    for name, fn in hooks():
        assert inspect.getdoc(fn), f"{name} has no docstring"


def test_every_hook_parameter_has_a_param_line() -> None:
    for name, fn in hooks():
        documented = set(re.findall(r":param (\w+):", inspect.getdoc(fn) or ""))
        parameters = set(inspect.signature(fn).parameters)
        assert parameters == documented, f"{name}: parameters {parameters} vs documented {documented}"
