"""One failure never spreads: a daemon that does not answer, a second daemon, a full disk.

Real units under the private user manager, the fake engine, the real `vllm-agent` command.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.agent_cli import AGENT, AgentCli
from harness.ci import missing
from harness.processes import wait_for
from harness.tmpfs import TinyTmpfs, tmpfs_unavailable
from vllm_agent.daemon.api_client import call


def deploy(agent: AgentCli, model_dir: Path, name: str) -> None:
    agent.write_deployment(name, f'model = "{model_dir}"\nargs = ["--fake-load-time", "0.3"]\n')


@pytest.fixture
def mute_daemon(agent: AgentCli) -> Iterator[Path]:
    """Something that accepts connections on the agent's socket and never answers (a hung or
    SIGSTOPped daemon)."""
    path = agent.config_dir.parent / "agent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(path))
        mute.listen(64)
        yield path
    path.unlink(missing_ok=True)


def timed(agent: AgentCli, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = agent.run(*args, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return done, time.monotonic() - started


def test_commands_fall_back_to_systemd_when_the_daemon_does_not_answer(  # noqa: ANN001
    agent, model_dir, user_manager, mute_daemon
) -> None:
    deploy(agent, model_dir, "mute")
    warning = f"warning: the agent daemon on {mute_daemon} did not answer within 1s"

    done, took = timed(agent, "start", "mute")
    assert done.returncode == 0 and "mute" in done.stdout and "ready" in done.stdout, done.stdout + done.stderr
    assert warning in done.stderr and took < 60

    done, took = timed(agent, "status", "mute")
    assert done.returncode == 0 and "ready" in done.stdout
    assert done.stderr.count(warning + "; reading systemd directly") == 1  # asked once, not twice
    assert took < 3, f"status took {took:.1f}s"  # a generous bound: one second of waiting, once

    done, _ = timed(agent, "status", "mute", "--json")
    assert json.loads(done.stdout)["source"] == "systemd" and warning in done.stderr

    done, _ = timed(agent, "stop", "mute")
    assert done.returncode == 0 and "stopped" in done.stdout and warning in done.stderr
    assert user_manager.show("vllm@mute.service", "ActiveState")["ActiveState"] == "inactive"

    done, _ = timed(agent, "reload")
    assert done.returncode == 1
    assert f"error[daemon.unavailable]: the agent daemon on {mute_daemon} did not answer within 1s" in done.stderr


def test_a_second_daemon_refuses_naming_the_first_and_keeps_off_its_socket(agent, user_manager) -> None:  # noqa: ANN001
    user_manager.systemctl("start", "vllm-agent.service")
    path = agent.config_dir.parent / "agent.sock"
    first = wait_for("the daemon's API", lambda: call(path, memo=False).body)
    pid = int(user_manager.show("vllm-agent.service", "MainPID")["MainPID"])
    assert json.loads(first)["daemon"]["pid"] == pid

    done = agent.run("run", timeout=60)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and f"PID {pid}" in errors[0] and str(path) in errors[0], done.stderr

    answer = call(path, memo=False).body
    assert answer is not None and json.loads(answer)["daemon"]["pid"] == pid
    assert user_manager.show("vllm-agent.service", "ActiveState")["ActiveState"] == "active"


def test_a_full_state_disk_never_stops_serving_and_the_state_catches_up(  # noqa: ANN001
    agent, model_dir, user_manager
) -> None:
    # The tmpfs is mounted where the units (and the commands run below) see it: in the user
    # manager's mount namespace.
    inside = ["nsenter", "-t", str(user_manager.pid), "-m"]
    disk = TinyTmpfs(agent.state_dir, size="128k", prefix=inside)
    reason = tmpfs_unavailable() or disk.mount()
    if reason:
        missing(f"a tmpfs: {reason}")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*inside, str(AGENT), "--user", "--config-dir", str(agent.config_dir), *args]
        return subprocess.run(command, env=agent.env, capture_output=True, text=True, timeout=120)

    state_file = Path(f"/proc/{user_manager.pid}/root") / agent.state_dir.relative_to("/") / "deployments/full.json"

    def saved() -> dict:
        try:
            return json.loads(state_file.read_text())
        except (OSError, ValueError):
            return {}

    try:
        agent.write_deployment(
            "full", f'model = "{model_dir}"\nargs = ["--fake-load-time", "0.3"]\n[health]\nchecks = ["http"]\n'
        )
        assert cli("start", "full").returncode == 0
        user_manager.systemctl("start", "vllm-agent.service")
        wait_for("health records on disk", lambda: saved().get("phase") == "serving" and saved().get("health"))
        before = user_manager.show("vllm@full.service", "MainPID", "NRestarts", "ActiveState")

        disk.fill()
        filled_at = time.time()
        probes = agent.log("full").count('"GET /health HTTP/1.1" 200')
        # Health rounds go on (every 0.5 s) and meet the full disk: logged once, not per round.
        wait_for("more health rounds", lambda: agent.log("full").count('"GET /health HTTP/1.1" 200') >= probes + 6)
        assert agent.log("full").count("cannot write; keeping the change in memory") == 1, agent.log("full")[-3000:]
        assert all(record["at"] < filled_at for record in saved()["health"])  # the disk has the old rounds
        status = cli("status", "full", "--json")
        assert status.returncode == 0, status.stderr
        row = json.loads(status.stdout)["deployments"][0]
        assert (row["state"], json.loads(status.stdout)["source"]) == ("ready", "daemon")
        assert user_manager.show("vllm@full.service", "MainPID", "NRestarts", "ActiveState") == before

        disk.free()
        freed_at = time.time()
        wait_for("the state file to catch up", lambda: all(r["at"] > freed_at for r in saved().get("health", [])))
        assert "writes work again" in agent.log("full")
        assert user_manager.show("vllm@full.service", "MainPID", "NRestarts", "ActiveState") == before
    finally:
        user_manager.systemctl("stop", "vllm-agent.service", "vllm@full.service", check=False)
        disk.unmount()
