"""The ``script`` runner: real programs in a real process group, against the real fake engine."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from harness.fake_engine import Fake, alive, proc_state
from vllm_agent.config.schema import Deployment, TestSpec
from vllm_agent.plugin_api import EngineTarget, TestContext
from vllm_agent_plugins._subprocess import OUTPUT_CAP
from vllm_agent_plugins.tests_script import ScriptRunner

DEPLOYMENT = Deployment(name="tiny", model="/models/tiny")
TARGET = EngineTarget(deployment="tiny", url="http://127.0.0.1:9", served_model_name="tiny")


@pytest.fixture
def context(tmp_path: Path) -> TestContext:
    (tmp_path / "conf" / "tests.d").mkdir(parents=True)
    return TestContext(config_dir=tmp_path / "conf", deployment=DEPLOYMENT)


def script(context: TestContext, name: str, body: str, mode: int = 0o755) -> Path:
    path = context.config_dir / "tests.d" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


async def run(context: TestContext, target: EngineTarget = TARGET, **options):  # noqa: ANN003, ANN201
    spec = TestSpec(runner="script", **options)
    return await asyncio.wait_for(ScriptRunner().run(target, spec, context), spec.timeout)


async def test_a_script_that_exits_0_passes_and_sees_the_engine(context: TestContext, engine: Fake) -> None:
    # The script asks the real engine, as an operator's check would.
    script(
        context,
        "models.sh",
        f"""exec {sys.executable} -c '
import os, urllib.request
with urllib.request.urlopen(os.environ["VLLM_AGENT_URL"] + "/v1/models") as answer:
    assert os.environ["VLLM_AGENT_MODEL"].encode() in answer.read()
env = os.environ
print("listed", env["VLLM_AGENT_MODEL"], "for", env["VLLM_AGENT_DEPLOYMENT"], "key", env.get("VLLM_API_KEY", "unset"))
'
""",
    )
    target = EngineTarget(deployment="tiny", url=engine.base, served_model_name="tiny")
    [outcome] = await run(context, target, path="models.sh", name="models")
    assert (outcome.name, outcome.ok, outcome.detail) == ("models", True, "")
    assert outcome.output == "listed tiny for tiny key unset\n"
    keyed = EngineTarget(deployment="tiny", url=engine.base, served_model_name="tiny", api_key="s3cret")
    [outcome] = await run(context, keyed, path="models.sh")
    assert outcome.name == "models.sh"
    assert outcome.output == "listed tiny for tiny key unset\n"  # the key only where it was asked for
    [outcome] = await run(context, keyed, path="models.sh", api_key=True)
    assert outcome.output == "listed tiny for tiny key s3cret\n"


async def test_a_failing_script_reports_its_status_and_last_line(context: TestContext) -> None:
    script(context, "fail.sh", 'echo "args: $*"\necho "model answered nonsense" >&2\necho\nexit 3\n')
    [outcome] = await run(context, path="fail.sh", args=["--strict", "two words"])
    assert not outcome.ok
    assert outcome.detail == "exit status 3: model answered nonsense"
    assert outcome.output == "args: --strict two words\nmodel answered nonsense\n\n"


async def test_a_script_killed_by_a_signal(context: TestContext) -> None:
    script(context, "die.sh", "kill -9 $$\n")
    [outcome] = await run(context, path="die.sh")
    assert (outcome.ok, outcome.detail) == (False, "killed by SIGKILL")


async def test_binary_garbage_output_is_kept_printable_and_capped(context: TestContext) -> None:
    script(
        context,
        "noise.sh",
        "head -c 200000 /dev/urandom\nprintf '\\n\\001\\002bad\\033[31m last words\\r\\n'\nexit 1\n",
    )
    [outcome] = await run(context, path="noise.sh")
    assert outcome.detail == "exit status 1: \ufffd\ufffdbad\ufffd[31m last words"
    assert outcome.output.startswith("[... ") and "earlier bytes of output dropped]\n" in outcome.output
    assert len(outcome.output) < OUTPUT_CAP + 100
    assert not any(ch < " " and ch not in "\t\n" for ch in outcome.output)


def _pids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()]


async def test_a_timeout_kills_the_whole_process_group(context: TestContext, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script(context, "hang.sh", f"sleep 100 &\necho $! $$ > {pids}\necho started\nsleep 100\n")
    [outcome] = await run(context, path="hang.sh", timeout=1)
    assert not outcome.ok
    assert outcome.detail == "timed out after 0.9s (process group killed): started"
    assert pids.exists()
    assert not [pid for pid in _pids(pids) if alive(pid)]  # the background sleep too; from /proc


async def test_cancellation_kills_and_reaps_the_group_before_it_goes_on(context: TestContext, tmp_path: Path) -> None:
    # The launcher bounds run() with wait_for: its cancellation must not leave the script behind.
    pids = tmp_path / "pids"
    script(context, "hang.sh", f"sleep 100 &\necho $! $$ > {pids}\nsleep 100\n")
    spec = TestSpec(runner="script", path="hang.sh", timeout=60)
    task = asyncio.ensure_future(ScriptRunner().run(TARGET, spec, context))
    while not pids.exists() or len(pids.read_text().split()) < 2:
        await asyncio.sleep(0.02)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(task, 0.2)
    background, leader = _pids(pids)
    assert proc_state(leader) is None  # killed and reaped, not a zombie
    assert not alive(background)


async def test_background_children_do_not_outlive_a_passing_script(context: TestContext, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script(context, "leaky.sh", f"sleep 100 &\necho $! > {pids}\necho done\n")
    [outcome] = await run(context, path="leaky.sh")
    assert outcome.ok
    assert not alive(_pids(pids)[0])


def test_problems(context: TestContext, tmp_path: Path) -> None:
    runner = ScriptRunner()
    tests_d = context.config_dir / "tests.d"

    def problems(**options: object) -> list[str]:
        return list(runner.problems(TestSpec(runner="script", **options), context))

    assert problems() == ["path: required"]
    assert problems(path="x.sh") == [f"path: {tests_d}/x.sh does not exist"]
    script(context, "plain.sh", "exit 0\n", mode=0o644)
    assert problems(path="plain.sh") == [f"path: {tests_d}/plain.sh is not executable (chmod +x)"]
    script(context, "sub/check.sh", "exit 0\n")
    assert problems(path="sub/check.sh") == []  # relative to CONFIG_DIR/tests.d
    elsewhere = tmp_path / "elsewhere.sh"
    elsewhere.write_text("#!/bin/sh\n")
    elsewhere.chmod(0o755)
    assert problems(path=str(elsewhere)) == []  # absolute paths stay as they are
    assert problems(path="sub") == [f"path: {tests_d}/sub is not a file"]
    assert problems(path="sub/check.sh", arg=["-v"], args="-v", api_key="yes") == [
        "arg: unknown option for runner 'script' (known: path, args, api_key)",
        "args: must be a list of strings, got '-v'",
        "api_key: must be true or false, got 'yes'",
    ]


async def test_a_script_that_cannot_be_executed(context: TestContext) -> None:
    path = context.config_dir / "tests.d" / "no-shebang.sh"
    path.write_text("echo hi\n")
    path.chmod(0o755)
    [outcome] = await run(context, path="no-shebang.sh")
    assert not outcome.ok
    assert outcome.detail == f"cannot run {path}: Exec format error (does it start with a #! line?)"


async def test_a_script_gone_since_validation_fails_without_raising(context: TestContext) -> None:
    [outcome] = await run(context, path="gone.sh")
    assert not outcome.ok
    assert outcome.detail == f"path: {context.config_dir}/tests.d/gone.sh does not exist"


async def test_the_script_does_not_inherit_systemds_private_variables(
    context: TestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("VLLM_API_KEY", "the-launchers-own")
    script(context, "env.sh", 'echo "${NOTIFY_SOCKET-none} ${VLLM_API_KEY-none} $PATH"\n')
    [outcome] = await run(context, path="env.sh")
    assert outcome.output == f"none none {os.environ['PATH']}\n"
