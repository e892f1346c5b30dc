"""`vllm-agent doctor` against injected fakes: a fake unit manager, an HTTP transport standing in
for the engine, a port-holder lookup and a command runner with the real interfaces."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from harness.agent_cli import write_tiny_model_dir
from vllm_agent.config.desired import DesiredStates
from vllm_agent.config.directory import Config, load_config
from vllm_agent.config.ports import Holder
from vllm_agent.deployments.state import StateStore
from vllm_agent.doctor.report import Finding, Probes, examine, report, worst
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.testing.unit_manager import FakeUnit, FakeUnitManager

PORT = 18123  # never bound: the port-holder lookup is injected
OOM_TAIL = (
    "ERROR 01-14 10:29:13 [core.py:700] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 224.00 MiB.\n"
    "ERROR 01-14 10:29:13 [async_llm.py:420] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered "
    "an issue. See stack trace (above) for the root cause.\n"
)


def make_config(tmp_path: Path) -> Config:
    conf = tmp_path / "conf"
    (conf / "models.d").mkdir(parents=True)
    (conf / "agent.toml").write_text(
        f'state_dir = "{tmp_path / "state"}"\nunit_dir = "{tmp_path / "units"}"\nlog_dir = "{tmp_path / "logs"}"\n'
        f'socket = "{tmp_path / "agent.sock"}"\n'
        f'[engine]\ncommand = ["{sys.executable}", "-m", "vllm.entrypoints.openai.api_server"]\n'
    )
    model = write_tiny_model_dir(tmp_path / "model")
    (conf / "models.d" / "tiny.toml").write_text(f'model = "{model}"\nport = {PORT}\n')
    (tmp_path / "logs").mkdir()
    return load_config(conf, user=True)


def engine(*, wedged: bool = False, health: int = 200) -> httpx.MockTransport:
    async def answer(request: httpx.Request) -> httpx.Response:
        if wedged and request.url.path == "/v1/completions":
            await asyncio.sleep(3600)  # /health stays 200 while generation hangs (vllm issue 39863)
        if request.url.path == "/health":
            return httpx.Response(health)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "tiny", "root": "/model"}]})
        if request.url.path == "/v1/completions":
            return httpx.Response(200, json={"choices": [{"index": 0, "text": " hi", "finish_reason": "length"}]})
        if request.url.path == "/version":
            return httpx.Response(200, json={"version": "0.32.0"})
        return httpx.Response(404)

    return httpx.MockTransport(answer)


def probes(units: FakeUnitManager, transport: httpx.MockTransport, holder: Holder | None, timeout: float = 5) -> Probes:
    async def connect(user: bool) -> FakeUnitManager:
        return units

    return Probes(
        connect=connect,
        http=lambda: httpx.AsyncClient(transport=transport),
        run=lambda argv, seconds: (0, "vllm 0.32.0"),
        timeout=timeout,
        extra={"port_holder": lambda port, host: holder, "disk_usage": lambda path: (100 << 30, 50 << 30, 50 << 30)},
    )


async def running(config: Config) -> FakeUnitManager:
    units = FakeUnitManager()
    units.define("vllm@tiny.service")
    await units.start("vllm@tiny.service")
    StateStore(config.state_dir).update("tiny", phase="serving")
    DesiredStates(config.state_dir, config.unit_dir, user=True).set("tiny", "running")  # as `start` does
    return units


def of(findings: list[Finding], scope: str) -> dict[str, Finding]:
    return {finding.check: finding for finding in findings if finding.scope == scope}


async def test_a_healthy_deployment_is_all_ok(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    units = await running(config)
    pid = (await units.get_state("vllm@tiny.service")).main_pid
    own = Holder("127.0.0.1", PORT, 0, pid, "python")  # the unit's own process listens
    findings = await examine(config, make_plugin_manager(config.settings), probes(units, engine(), own))
    mine = of(findings, "tiny")
    assert {f.level for f in mine.values()} == {"ok"}, [f.line() for f in mine.values()]
    assert {"unit", "state", "port", "health", "models", "generation", "model"} <= set(mine)
    assert "vllm 0.32.0" in of(findings, "host")["engine"].text
    assert "last-failure" not in mine  # nothing failed


async def test_a_port_held_by_another_process_fails_naming_it(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    units = FakeUnitManager()
    units.define("vllm@tiny.service")
    other = Holder("0.0.0.0", PORT, 0, 4242, "nginx")
    findings = await examine(config, make_plugin_manager(config.settings), probes(units, engine(), other))
    port = of(findings, "tiny")["port"]
    assert port.level == "fail" and "pid 4242 (nginx)" in port.text
    assert worst(findings) == 2


async def test_a_wedged_engine_gives_a_finding_not_a_hang(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    units = await running(config)
    pid = (await units.get_state("vllm@tiny.service")).main_pid
    own = Holder("127.0.0.1", PORT, 0, pid, "python")
    began = time.monotonic()
    findings = await examine(
        config, make_plugin_manager(config.settings), probes(units, engine(wedged=True), own, timeout=0.5)
    )
    mine = of(findings, "tiny")
    assert mine["health"].level == "ok"  # /health alone would say it serves
    assert mine["generation"].level == "fail" and "no answer within 0.5s" in mine["generation"].text
    assert time.monotonic() - began < 60  # bounded by the probe timeout, with room for a loaded machine


async def test_an_unreachable_systemd_is_a_finding(tmp_path: Path) -> None:
    config = make_config(tmp_path)

    async def never(user: bool) -> FakeUnitManager:
        await asyncio.sleep(3600)
        raise AssertionError

    wedged = probes(FakeUnitManager(), engine(), None, timeout=0.3)
    wedged.connect = never
    findings = await examine(config, make_plugin_manager(config.settings), wedged)
    assert of(findings, "host")["systemd"].level == "fail"
    assert of(findings, "tiny")["unit"].text.startswith("not checked")


async def test_the_last_failure_is_classified_from_the_log_with_its_fix(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    units = FakeUnitManager()
    units.define("vllm@tiny.service", FakeUnit(exit_status=1))
    await units.start("vllm@tiny.service")  # exits 1 at once: failed
    StateStore(config.state_dir).update("tiny", phase="failed", reason="the engine exited with status 1")
    (tmp_path / "logs" / "tiny.log").write_text("INFO starting\n" + OOM_TAIL)
    findings = await examine(config, make_plugin_manager(config.settings), probes(units, engine(), None))
    failure = of(findings, "tiny")["last-failure"]
    assert (failure.level, failure.kind) == ("fail", "gpu-oom")
    assert "ran out of GPU memory" in failure.text and "gpu_memory_utilization" in failure.hint
    assert of(findings, "tiny")["state"].level == "fail"


async def test_a_start_limit_hit_is_a_crash_loop_with_its_cause(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    units = FakeUnitManager()
    # StartLimitBurst = max_restarts (3) + 1, as rendered
    units.define("vllm@tiny.service", FakeUnit(restart="always", exit_status=1, start_limit_burst=4))
    await units.start("vllm@tiny.service")
    assert (await units.get_state("vllm@tiny.service")).active_state == "failed"
    (tmp_path / "logs" / "tiny.log").write_text(
        "RuntimeError: NCCL error: unhandled cuda error (run with NCCL_DEBUG=INFO for details)\n"
    )
    findings = await examine(config, make_plugin_manager(config.settings), probes(units, engine(), None))
    failure = of(findings, "tiny")["last-failure"]
    assert failure.kind == "nccl" and failure.text.startswith("crash loop; cause:")
    assert "'vllm-agent start tiny' resets it" in failure.hint


def test_exit_status_is_the_worst_finding_and_json_has_its_shape() -> None:
    findings = [Finding("host", "a", "ok", "fine"), Finding("x", "b", "warn", "hmm", "do this")]
    out = io.StringIO()
    assert report(findings, as_json=True, out=out) == 1
    body = json.loads(out.getvalue())
    assert body["ok"] is False and body["exit"] == 1
    assert body["findings"][1] == {
        "scope": "x",
        "check": "b",
        "level": "warn",
        "text": "hmm",
        "hint": "do this",
        "kind": "",
    }
    assert worst([*findings, Finding("x", "c", "fail", "bad")]) == 2
    assert worst([Finding("host", "a", "ok", "fine")]) == 0
    text = io.StringIO()
    report(findings, as_json=False, out=text)
    assert "warn  b            hmm  hint: do this" in text.getvalue()


def test_doctor_is_a_command_that_exits_by_its_worst_finding(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"} | {"XDG_RUNTIME_DIR": str(runtime)}
    argv = [sys.executable, "-m", "vllm_agent", "--user", "--config-dir", str(config.path), "doctor", "tiny", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    body = json.loads(done.stdout)
    assert done.returncode == body["exit"] == 2, done.stderr  # no user manager on this runtime dir
    assert {f["scope"] for f in body["findings"]} == {"host", "tiny"}
    systemd = next(f for f in body["findings"] if f["check"] == "systemd")
    assert systemd["level"] == "fail" and systemd["hint"]
    assert "Traceback" not in done.stderr


async def test_an_unclassified_failure_keeps_the_launchers_own_reason_and_hint(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    units = FakeUnitManager()
    units.define("vllm@tiny.service", FakeUnit(exit_status=78))
    await units.start("vllm@tiny.service")
    reason, hint = "engine command not found: vllm (PATH=/usr/bin)", "install vLLM for the service"
    StateStore(config.state_dir).update("tiny", phase="failed", reason=reason, hint=hint)
    (tmp_path / "logs" / "tiny.log").write_text(
        f'<3>{{"deployment": "tiny", "reason": "{reason}", "event": "failed", "level": "error"}}\n'
    )
    findings = await examine(config, make_plugin_manager(config.settings), probes(units, engine(), None))
    failure = of(findings, "tiny")["last-failure"]
    assert (failure.kind, failure.text, failure.hint) == ("exit", reason, hint)
