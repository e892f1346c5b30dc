"""The ``pytest`` runner: a real nested pytest, one outcome per test case, against the real fake engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from harness.fake_engine import Fake, alive
from vllm_agent.config.schema import Deployment, TestSpec
from vllm_agent.plugin_api import EngineTarget, TestContext, TestOutcome
from vllm_agent_plugins.tests_pytest import PytestRunner

DEPLOYMENT = Deployment(name="tiny", model="/models/tiny")
TARGET = EngineTarget(deployment="tiny", url="http://127.0.0.1:9", served_model_name="tiny")

ANSWERS = """
import os, urllib.request
import pytest

def test_models_lists_the_served_name():
    with urllib.request.urlopen(os.environ["VLLM_AGENT_URL"] + "/v1/models") as answer:
        assert os.environ["VLLM_AGENT_MODEL"].encode() in answer.read()

def test_fails():
    print("some output of the failing test")
    answer, expected = 1, 2  # this generated test fails on purpose
    assert answer == expected, "numbers differ\\nsecond line"

def test_skipped():
    pytest.skip("not today")

class TestDeployment:
    def test_name(self):
        assert os.environ["VLLM_AGENT_DEPLOYMENT"] == "tiny"
"""


@pytest.fixture(autouse=True)
def _lean_nested_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nested pytest inherits our environment: without this plugin, it starts in a third of the time."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def context(tmp_path: Path) -> TestContext:
    (tmp_path / "conf" / "tests.d").mkdir(parents=True)
    return TestContext(config_dir=tmp_path / "conf", deployment=DEPLOYMENT)


def write(context: TestContext, name: str, text: str) -> Path:
    path = context.config_dir / "tests.d" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def run(context: TestContext, target: EngineTarget = TARGET, **options: object) -> list[TestOutcome]:
    spec = TestSpec(runner="pytest", **options)
    return list(await asyncio.wait_for(PytestRunner().run(target, spec, context), spec.timeout))


async def test_one_outcome_per_test_case(context: TestContext, engine: Fake) -> None:
    write(context, "test_answers.py", ANSWERS)
    target = EngineTarget(deployment="tiny", url=engine.base, served_model_name="tiny")
    outcomes = await run(context, target, path="test_answers.py")
    assert [(o.name, o.ok, o.detail) for o in outcomes] == [
        ("test_answers.py::test_models_lists_the_served_name", True, ""),
        ("test_answers.py::test_fails", False, "AssertionError: numbers differ"),
        ("test_answers.py::test_skipped", True, "skipped: not today"),
        ("test_answers.py::TestDeployment::test_name", True, ""),
    ]
    failed = outcomes[1]
    assert "some output of the failing test" in failed.output
    assert "1 failed, 2 passed, 1 skipped" in failed.output
    assert [o.output for o in outcomes if o is not failed] == ["", "", ""]
    assert not list(context.config_dir.rglob("__pycache__"))  # the configuration stays as it was


async def test_a_directory_and_args(context: TestContext) -> None:
    write(context, "suite/test_a.py", "def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    write(context, "suite/sub/test_b.py", "def test_three():\n    pass\n")
    outcomes = await run(context, path="suite", args=["-k", "not two"])
    assert [(o.name, o.ok) for o in outcomes] == [("sub/test_b.py::test_three", True), ("test_a.py::test_one", True)]


async def test_no_tests_collected_fails(context: TestContext) -> None:
    write(context, "test_empty.py", "x = 1\n")
    [outcome] = await run(context, path="test_empty.py", name="empty")
    assert (outcome.name, outcome.ok) == ("empty", False)
    assert outcome.detail.startswith("pytest exit status 5 (no tests collected): ")
    assert "no tests ran" in outcome.output


async def test_a_timeout_kills_pytest_and_what_it_started(context: TestContext, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    write(
        context,
        "test_slow.py",
        f"import subprocess, time\n\ndef test_slow():\n"
        f"    child = subprocess.Popen(['sleep', '100'])\n"
        f"    open({str(pids)!r}, 'w').write(str(child.pid))\n"
        f"    time.sleep(100)\n",
    )
    [outcome] = await run(context, path="test_slow.py", timeout=1.5)
    assert not outcome.ok
    assert outcome.detail.startswith("timed out after 1.35s (process group killed)")
    assert not alive(int(pids.read_text()))


def test_problems(context: TestContext) -> None:
    tests_d = context.config_dir / "tests.d"

    def problems(runner: PytestRunner = PytestRunner(), **options: object) -> list[str]:  # noqa: B008
        return list(runner.problems(TestSpec(runner="pytest", **options), context))

    assert problems() == ["path: required"]
    assert problems(path="test_x.py") == [f"path: {tests_d}/test_x.py does not exist"]
    write(context, "test_x.py", "")
    assert problems(path="test_x.py") == []
    assert problems(path="test_x.py", args=[1]) == ["args: must be a list of strings, got [1]"]
    assert problems(PytestRunner(has_pytest=lambda: False), path="test_x.py") == [
        "pytest is not installed in the agent's Python"
    ]
