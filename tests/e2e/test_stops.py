"""Stops under real units: `systemctl stop` is honoured in every phase of the launcher, in seconds,
and recorded as `stopped`; an engine that ignores SIGTERM is SIGKILLed at its stop timeout; a
failure before the engine runs is recorded once, not looped."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.agent_cli import AgentCli
from harness.processes import wait_for

STOP_BOUND = 10.0  # seconds; the unit's TimeoutStopSec is 30, which would end in Result=timeout


class SilentHub:
    """A Hugging Face endpoint that accepts connections and never answers: a stuck download."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_hub() -> Iterator[SilentHub]:
    hub = SilentHub()
    yield hub
    hub.close()


def saved(agent: AgentCli, name: str) -> dict:
    path = agent.state_dir / "deployments" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def stop_unit(user_manager, name: str) -> float:  # noqa: ANN001
    """`systemctl stop`, the way an operator or shutdown does it; returns how long it took."""
    started = time.monotonic()
    user_manager.systemctl("stop", f"vllm@{name}.service")
    return time.monotonic() - started


def write_slow_script(agent: AgentCli) -> None:
    script = agent.config_dir / "tests.d" / "slow.sh"
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\nsleep 120\n")
    script.chmod(0o755)


@pytest.mark.parametrize("phase", ["resolving", "loading", "testing", "serving"])
def test_a_stop_in_each_phase_ends_within_seconds_and_is_recorded(
    agent: AgentCli,
    model_dir: Path,
    user_manager,  # noqa: ANN001
    silent_hub: SilentHub,
    tmp_path: Path,
    phase: str,
) -> None:
    name = f"stop-{phase}"
    marker = tmp_path / "engine-started"
    args = ["--fake-started-file", str(marker), "--fake-load-time", "60" if phase == "loading" else "0.3"]
    model = f'model = "{model_dir}"\n'
    if phase == "resolving":  # the built-in hf source, downloading from a Hub that never answers
        env = f'HF_ENDPOINT = "{silent_hub.url}", HF_HOME = "{tmp_path / "hf"}"'
        model = f'model = "org/never-downloads"\nenv = {{ {env} }}\n'
    tests = "tests = []\n" if phase != "testing" else ""
    text = model + f"args = {json.dumps(args)}\n" + tests
    if phase == "testing":
        write_slow_script(agent)
        text += '[[tests]]\nrunner = "script"\npath = "slow.sh"\ntimeout = 300\n'
    agent.write_deployment(name, text)
    agent.ok("start", name, "--no-wait")
    wait_for(f"phase {phase}", lambda: saved(agent, name).get("phase") == phase, timeout=30)
    if phase == "resolving":
        wait_for("the download to reach the Hub", lambda: silent_hub.accepted, timeout=30)
        time.sleep(0.5)  # well into the download

    took = stop_unit(user_manager, name)

    unit = user_manager.show(f"vllm@{name}.service", "ActiveState", "Result")
    assert unit == {"ActiveState": "inactive", "Result": "success"}, unit
    assert took < STOP_BOUND, f"stopping in phase {phase} took {took:.1f}s"
    assert saved(agent, name)["phase"] == "stopped"
    assert agent.status(name)["state"] == "stopped"
    if phase == "resolving":  # the launcher is gone: nothing can start the engine any more
        assert not marker.exists(), "an engine was spawned after the stop"
    else:
        assert marker.exists()  # the marker works: the engine wrote it in the other phases


def test_an_engine_that_ignores_sigterm_is_sigkilled_at_its_stop_timeout(
    agent: AgentCli,
    model_dir: Path,
    user_manager,  # noqa: ANN001
) -> None:
    agent.write_deployment(
        "stubborn",
        f'model = "{model_dir}"\nargs = ["--fake-load-time", "0.3", "--fake-mode", "ignore-sigterm"]\n'
        "tests = []\n[startup]\nstop_timeout = 2\n",
    )
    agent.ok("start", "stubborn")

    took = stop_unit(user_manager, "stubborn")

    unit = user_manager.show("vllm@stubborn.service", "ActiveState", "Result")
    assert unit == {"ActiveState": "inactive", "Result": "success"}, unit  # not Result=timeout
    assert 2.0 <= took < STOP_BOUND, took
    assert saved(agent, "stubborn")["phase"] == "stopped"
    log = agent.log("stubborn")
    assert "ignoring SIGTERM (fake ignore-sigterm)" in log
    assert '"event": "engine stopped"' in log and '"status": -9' in log


def test_a_missing_engine_binary_is_recorded_once_not_looped(agent: AgentCli, model_dir: Path, user_manager) -> None:  # noqa: ANN001
    agent.write_deployment(
        "nobin", f'model = "{model_dir}"\ntests = []\n[engine]\ncommand = ["no-such-vllm-here", "serve"]\n'
    )
    done = agent.run("start", "nobin")
    assert done.returncode != 0
    assert "engine command not found: no-such-vllm-here (PATH=" in done.stderr
    status = agent.status("nobin")
    assert status["state"] == "failed" and status["restarts"] == 0
    assert status["reason"].startswith("engine command not found: no-such-vllm-here (PATH=")
    unit = user_manager.show("vllm@nobin.service", "ExecMainStatus", "NRestarts")
    assert unit == {"ExecMainStatus": "78", "NRestarts": "0"}, unit
