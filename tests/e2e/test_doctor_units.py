"""`vllm-agent doctor` under the real user manager, with the fake engine in real units."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from harness.agent_cli import AgentCli
from harness.ports import agent_port
from harness.processes import wait_for

START = 180.0  # seconds: a loaded 2-core machine shared with other test runs


def doctor(agent: AgentCli, name: str) -> tuple[int, dict[str, dict[str, Any]]]:
    done = agent.run("doctor", name, "--json", timeout=180)
    assert "Traceback" not in done.stderr, done.stderr
    body = json.loads(done.stdout)
    assert done.returncode == body["exit"]
    return done.returncode, {f["check"]: f for f in body["findings"] if f["scope"] == name} | {
        "host:" + f["check"]: f for f in body["findings"] if f["scope"] == "host"
    }


def test_a_healthy_deployment_is_all_ok_and_start_showed_its_load_phases(agent: AgentCli, model_dir: Path) -> None:
    done = agent.ok("deploy", "well", "--model", str(model_dir), "--", "--fake-load-time", "6", timeout=START)
    assert "loading weights" in done.stderr and "/4 shards" in done.stderr, done.stderr  # not the raw last line
    code, found = doctor(agent, "well")
    mine = {check: f for check, f in found.items() if not check.startswith("host:")}
    assert {f["level"] for f in mine.values()} == {"ok"}, json.dumps(mine, indent=1)
    assert {"unit", "state", "port", "health", "models", "generation", "model", "version"} <= set(mine)
    assert "served by its engine" in mine["port"]["text"]
    assert found["host:systemd"]["level"] == "ok"
    assert all(f["level"] != "fail" for f in found.values()), json.dumps(found, indent=1)
    assert code in (0, 1)


def test_a_port_held_by_another_process_fails_naming_the_holder(agent: AgentCli, model_dir: Path) -> None:
    port = agent_port()
    agent.write_deployment("held", f'model = "{model_dir}"\nport = {port}\n')
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        code, found = doctor(agent, "held")
    finally:
        holder.close()
    assert code == 2
    assert found["port"]["level"] == "fail"
    assert f"port {port} is held by pid {os.getpid()}" in found["port"]["text"]
    assert found["port"]["hint"]


def test_a_crash_loop_is_classified_with_its_fix_and_status_points_to_doctor(agent: AgentCli, model_dir: Path) -> None:
    # Ready, then its EngineCore dies (exit 0, as vLLM does); Restart=always until the start limit
    # (max_restarts = 1 in the tests' agent.toml: two starts) stops it.
    agent.run("deploy", "flaky", "--model", str(model_dir), "--", "--fake-mode", "engine-death-after:1", timeout=START)
    wait_for("flaky to fail for good", lambda: agent.status("flaky")["state"] == "failed", timeout=START, every=1)
    code, found = doctor(agent, "flaky")
    assert code == 2
    failure = found["last-failure"]
    assert failure["level"] == "fail" and failure["kind"] == "engine-dead"
    assert failure["text"].startswith("crash loop; cause: the engine's core died (EngineDeadError)")
    assert "'vllm-agent start flaky' resets it" in failure["hint"]
    assert found["state"]["level"] == "fail" and "start limit hit" in found["state"]["text"]
    line = agent.run("status", "flaky")
    assert line.returncode == 3 and "(more: vllm-agent doctor flaky)" in line.stdout
    assert len(line.stdout.strip().splitlines()) == 1
