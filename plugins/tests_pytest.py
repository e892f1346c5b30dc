"""Test runner ``pytest``: a pytest file or directory, one outcome per test case.

```toml
[[tests]]
runner = "pytest"
path = "test_answers.py"       # file or directory, relative to CONFIG_DIR/tests.d/, or absolute
args = ["-k", "not slow"]      # optional, passed to pytest
api_key = true                 # optional: pass the deployment's key as VLLM_API_KEY
```

Runs ``python -m pytest PATH -q -p no:cacheprovider --junitxml=...`` with the agent's own
Python, in its own process group (see _subprocess), with the same environment as ``script``
(VLLM_AGENT_URL, VLLM_AGENT_MODEL, VLLM_AGENT_DEPLOYMENT; VLLM_API_KEY only with
``api_key = true``). The JUnit report gives one outcome per test case, named like a pytest
node id (``test_answers.py::test_hello``); the whole output goes with the first failing one.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from vllm_agent import hookimpl
from vllm_agent.plugin_api import AgentSettings, EngineTarget, TestContext, TestOutcome, TestRunner, TestSpec

from ._subprocess import (
    Finished,
    describe_status,
    last_line,
    option_problems,
    own_timeout,
    program_env,
    resolve_path,
    run_program,
    wants_api_key,
)

OPTIONS = ("path", "args", "api_key")
EXIT_MEANINGS = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}


if TYPE_CHECKING:
    from xml.etree.ElementTree import Element


def pytest_importable() -> bool:
    return importlib.util.find_spec("pytest") is not None


class PytestRunner:
    name = "pytest"

    def __init__(self, *, python: str = sys.executable, has_pytest: Callable[[], bool] = pytest_importable) -> None:
        self.python = python
        self.has_pytest = has_pytest

    def problems(self, spec: TestSpec, context: TestContext) -> Sequence[str]:
        problems = option_problems(spec, self.name, OPTIONS)
        path = spec.options.get("path")
        if isinstance(path, str) and path and not resolve_path(path, context).exists():
            problems.append(f"path: {resolve_path(path, context)} does not exist")
        if not self.has_pytest():
            problems.append("pytest is not installed in the agent's Python")
        return problems

    async def run(self, target: EngineTarget, spec: TestSpec, context: TestContext) -> Sequence[TestOutcome]:
        label = spec.name or str(spec.options.get("path") or self.name)
        problems = self.problems(spec, context)
        if problems:
            return [TestOutcome(name=label, ok=False, detail="; ".join(problems))]
        path = resolve_path(spec.options["path"], context)
        root = path if path.is_dir() else path.parent
        limit = own_timeout(spec)
        env = program_env(target, api_key=wants_api_key(spec))
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the configuration directory may be read-only
        with tempfile.TemporaryDirectory(prefix="vllm-agent-pytest-") as scratch:
            report = Path(scratch) / "junit.xml"
            argv = [
                self.python,
                "-m",
                "pytest",
                str(path),
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
                "-o",
                "junit_family=xunit1",  # adds file= to each test case: node ids can be rebuilt
                f"--rootdir={root}",
                *spec.options.get("args", []),
            ]
            try:
                finished = await run_program(argv, env=env, timeout=limit, cwd=root)
            except OSError as err:
                return [TestOutcome(name=label, ok=False, detail=f"cannot run {self.python}: {err.strerror or err}")]
            cases = read_report(report) if report.exists() else []
        return outcomes(label, finished, cases, limit)


def outcomes(label: str, finished: Finished, cases: list[TestOutcome], limit: float) -> list[TestOutcome]:
    """Per-case outcomes, plus one for the run itself when it failed without a failing case."""
    results = list(cases)
    if finished.timed_out:
        detail = f"timed out after {limit:g}s (process group killed)"
        results.append(_run_outcome(label, detail, finished))
    elif finished.status != 0 and all(case.ok for case in results):
        status = finished.status or 0
        meaning = EXIT_MEANINGS.get(status)
        detail = f"pytest {describe_status(status)}" + (f" ({meaning})" if meaning else "")
        results.append(_run_outcome(label, detail, finished))
    elif not results:
        results.append(TestOutcome(name=label, ok=True, duration=finished.duration))
    first_failing = next((i for i, outcome in enumerate(results) if not outcome.ok), None)
    if first_failing is not None:
        results[first_failing] = dataclasses.replace(results[first_failing], output=finished.output)
    return results


def _run_outcome(label: str, detail: str, finished: Finished) -> TestOutcome:
    line = finished.last_line
    return TestOutcome(name=label, ok=False, detail=f"{detail}: {line}" if line else detail, duration=finished.duration)


def read_report(report: Path) -> list[TestOutcome]:
    """One outcome per <testcase> of a pytest JUnit (xunit1) report; [] when it is unreadable."""
    import xml.etree.ElementTree as ET  # here: every launcher and the daemon load this plugin

    try:
        root = ET.parse(report).getroot()
    except (ET.ParseError, OSError):
        return []
    found = []
    for case in root.iter("testcase"):
        problem = next((child for child in case if child.tag in ("failure", "error")), None)
        skipped = case.find("skipped")
        if problem is not None:
            detail = _first_line(problem.get("message") or problem.text or "") or problem.tag
            if problem.tag == "error":
                detail = f"error: {detail}"
        elif skipped is not None:
            reason = _first_line(skipped.get("message") or "")
            detail = f"skipped: {reason}" if reason else "skipped"
        else:
            detail = ""
        try:
            duration = float(case.get("time") or 0)
        except ValueError:
            duration = 0.0
        found.append(TestOutcome(name=node_id(case), ok=problem is None, detail=detail, duration=duration))
    return found


def _first_line(text: str) -> str:
    return last_line(text.strip().split("\n", 1)[0])


def node_id(case: Element) -> str:
    """``file.py::Class::test`` from a test case's file, classname and name attributes."""
    name = case.get("name") or "?"
    classname = case.get("classname") or ""
    file = case.get("file")
    if not file:
        return f"{classname}::{name}" if classname else name
    module = ".".join(PurePosixPath(file).with_suffix("").parts)
    inner = classname[len(module) + 1 :] if classname.startswith(module + ".") else ""
    return "::".join([file, *(part for part in inner.split(".") if part), name])


@hookimpl
def agent_post_start_tests(settings: AgentSettings) -> Sequence[TestRunner]:
    return [PytestRunner()]
