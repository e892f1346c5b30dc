"""Deployments end to end: real units under a real user manager, the fake engine inside them."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx
import pytest
from harness.agent_cli import AgentCli
from harness.processes import descendants


def engine_core_pids(root: int) -> set[int]:
    found = set()
    for pid in descendants(root):
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("VLLM::EngineCor"):
                found.add(pid)
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def complete(url: str, model: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 4}, timeout=10)


def test_deploy_waits_until_it_serves_and_status_says_ready(agent: AgentCli, model_dir: Path, user_manager) -> None:
    done = agent.ok("deploy", "tiny", "--model", str(model_dir), "--", "--fake-load-time", "1")
    assert "ready" in done.stdout
    status = agent.status("tiny")
    assert status["state"] == "ready" and status["pid"] > 0 and status["reason"] == ""
    # Ready means serving: the very first request after deploy returns answers.
    answer = complete(status["url"], "tiny")
    assert answer.status_code == 200 and answer.json()["choices"][0]["text"]
    shown = user_manager.show("vllm@tiny.service", "StatusText", "ActiveState")
    assert shown["ActiveState"] == "active" and shown["StatusText"].startswith("serving tiny on http://127.0.0.1:")
    # The whole truth is visible to systemctl cat; the port was written back to the file.
    cat = user_manager.systemctl("cat", "vllm@tiny.service").stdout
    assert f"--port {status['port']}" in cat and "launch tiny --" in cat
    assert f"port = {status['port']}" in agent.model_file("tiny").read_text()


def test_systemctl_start_alone_returns_only_when_serving(agent: AgentCli, model_dir: Path, user_manager) -> None:
    agent.ok("deploy", "direct", "--model", str(model_dir), "--no-start", "--", "--fake-load-time", "1.5")
    started = time.monotonic()
    user_manager.systemctl("start", "vllm@direct.service")  # no agent daemon, no CLI
    assert time.monotonic() - started >= 1.5
    status = agent.status("direct")
    assert status["state"] == "ready"
    assert httpx.get(f"{status['url']}/health", timeout=5).status_code == 200


def test_stop_leaves_no_engine_process(agent: AgentCli, model_dir: Path) -> None:
    agent.ok("deploy", "stopper", "--model", str(model_dir), "--", "--fake-load-time", "0.3")
    status = agent.status("stopper")
    launcher = status["pid"]
    cores = engine_core_pids(launcher)
    assert cores, "the fake engine starts a VLLM::EngineCore child"
    agent.ok("stop", "stopper")
    assert not alive(launcher)
    assert not [pid for pid in cores if alive(pid)]
    assert agent.status("stopper")["state"] == "stopped"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{status['url']}/health", timeout=2)


def test_restart_brings_up_a_new_engine(agent: AgentCli, model_dir: Path) -> None:
    agent.ok("deploy", "again", "--model", str(model_dir), "--", "--fake-load-time", "0.3")
    first = agent.status("again")
    agent.ok("restart", "again")
    second = agent.status("again")
    assert second["state"] == "ready" and second["pid"] != first["pid"]
    assert complete(second["url"], "again").status_code == 200


def test_remove_stops_and_deletes_everything(agent: AgentCli, model_dir: Path, user_manager) -> None:
    agent.ok("deploy", "gone", "--model", str(model_dir), "--", "--fake-load-time", "0.3")
    url = agent.status("gone")["url"]
    agent.ok("remove", "gone")
    assert not agent.model_file("gone").exists()
    assert not (user_manager.unit_dir / "vllm@gone.service.d").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
    assert agent.run("status", "gone").returncode != 0


def test_two_deployments_get_different_ports(agent: AgentCli, model_dir: Path) -> None:
    agent.ok("deploy", "one", "--model", str(model_dir), "--", "--fake-load-time", "0.3")
    agent.ok("deploy", "two", "--model", str(model_dir), "--", "--fake-load-time", "0.3")
    one, two = agent.status("one"), agent.status("two")
    assert one["port"] != two["port"]
    assert complete(one["url"], "one").status_code == 200 and complete(two["url"], "two").status_code == 200


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["deploy", "Bad_Name", "--model", "org/m"], "invalid deployment name 'Bad_Name'"),
        (["deploy", "ok", "--model", "../etc/passwd"], "model: must be a Hugging Face id"),
        (["deploy", "ok", "--model", "org/m;reboot"], "model: must be a Hugging Face id"),
        (["deploy", "ok", "--model", "org/m", "--port", "70000"], "port: must be <= 65535"),
    ],
)
def test_bad_names_and_model_ids_are_refused_with_nothing_written(
    agent: AgentCli, user_manager, args: list[str], expected: str
) -> None:
    done = agent.run(*args)
    assert done.returncode == 2 and expected in done.stderr
    assert "Traceback" not in done.stderr
    assert list((agent.config_dir / "models.d").iterdir()) == []
    assert not list(user_manager.unit_dir.glob("vllm@*.service.d"))


def test_engine_failing_at_start_fails_with_its_reason(agent: AgentCli, model_dir: Path) -> None:
    done = agent.run(
        "deploy", "broken", "--model", str(model_dir), "--", "--fake-mode", "exit-at-start", "--fake-load-time", "0.2"
    )
    assert done.returncode == 1
    assert "Engine core initialization failed" in done.stderr
    status = agent.status("broken")
    assert status["state"] == "failed"
    assert "start limit hit: 2 starts" in status["reason"] and "Engine core initialization failed" in status["reason"]


def test_a_taken_port_fails_at_once_naming_the_holder_without_restarts(agent: AgentCli, model_dir: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        done = agent.run("deploy", "clash", "--model", str(model_dir), "--port", str(port))
    finally:
        holder.close()
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken by pid {os.getpid()}" in done.stderr
    status = agent.status("clash")
    assert status["state"] == "failed" and status["restarts"] == 0


def test_engine_reporting_address_in_use_is_not_restarted(agent: AgentCli, model_dir: Path) -> None:
    done = agent.run("deploy", "inuse", "--model", str(model_dir), "--", "--fake-mode", "port-in-use")
    assert done.returncode == 1 and "the engine's port is already in use" in done.stderr
    assert agent.status("inuse")["restarts"] == 0


def test_a_slow_engine_fails_after_the_startup_timeout(agent: AgentCli, model_dir: Path) -> None:
    path = agent.model_file("slow")
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f'model = "{model_dir}"\nargs = ["--fake-load-time", "30"]\n[startup]\ntimeout = 2\n'
        "[restart]\nmax_restarts = 0\n"
    )
    started = time.monotonic()
    done = agent.run("start", "slow")
    assert done.returncode == 1 and "not ready after startup.timeout = 2s" in done.stderr
    assert time.monotonic() - started < 20


def test_status_json_has_the_documented_fields(agent: AgentCli, model_dir: Path) -> None:
    agent.ok("deploy", "shape", "--model", str(model_dir), "--no-start")
    status = agent.status("shape")
    assert {"name", "state", "model", "url", "port", "pid", "restarts", "reason", "gpus"} <= set(status)
    assert status["state"] == "stopped" and status["model"] == str(model_dir)


def test_logs_show_the_engine_output(agent: AgentCli, model_dir: Path) -> None:
    agent.ok("deploy", "talk", "--model", str(model_dir), "--", "--fake-load-time", "0.3")
    shown = agent.ok("logs", "talk").stdout
    # The engine's lines as they came, the agent's JSON lines rendered for a person...
    assert "Application startup complete" in shown and "INFO    [talk] ready  url=" in shown
    # ...and raw with --json, for scripts.
    assert '"event": "ready"' in agent.ok("logs", "talk", "--json").stdout


def test_an_engine_that_hangs_from_the_start_fails_its_smoke_tests(agent: AgentCli, model_dir: Path) -> None:
    # /health says 200, but nothing generates: ready would be a lie.
    agent.write_deployment(
        "mute",
        f'model = "{model_dir}"\nargs = ["--fake-mode", "hang-after:0"]\n'
        '[[tests]]\nrunner = "openai-smoke"\ntimeout = 4\ndeadline = 1\n',
    )
    done = agent.run("start", "mute")
    assert done.returncode == 1 and "post-start test openai-smoke/" in done.stderr
    assert agent.status("mute")["state"] == "failed"


def test_an_engine_that_crashes_under_its_first_requests_is_never_ready(agent: AgentCli, model_dir: Path) -> None:
    agent.write_deployment("brittle", f'model = "{model_dir}"\nargs = ["--fake-mode", "crash-after-requests:1"]\n')
    done = agent.run("start", "brittle")
    assert done.returncode == 1
    assert agent.status("brittle")["state"] == "failed"
    assert '"event": "ready"' not in agent.log("brittle")


def test_a_load_longer_than_systemds_start_timeout_succeeds_while_it_shows_progress(
    agent: AgentCli, model_dir: Path, user_manager
) -> None:
    # TimeoutStartSec is stall_timeout + 30 s = 31 s; the engine loads for 33 s, drawing vLLM's
    # checkpoint-shards progress bar (otherwise silent, as real loading is).
    agent.write_deployment(
        "patient",
        f'model = "{model_dir}"\nargs = ["--fake-load-time", "33", "--fake-mode", "cr-progress:0.2"]\n'
        "tests = []\n[startup]\nstall_timeout = 1\ntimeout = 120\n",
    )
    assert "TimeoutStartSec=31s" in agent.ok("render", "patient").stdout
    agent.ok("start", "patient")
    assert agent.status("patient")["state"] == "ready"
    assert user_manager.show("vllm@patient.service", "NRestarts")["NRestarts"] == "0"
