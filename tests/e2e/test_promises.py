"""README promises about what an operator sees: the phase in `systemctl status`, the `starting`
state, `status` without a name, `logs -f`."""

from __future__ import annotations

import select
import subprocess
from pathlib import Path

import httpx
from harness.agent_cli import AGENT, AgentCli
from harness.processes import wait_for


def test_systemctl_status_and_vllm_agent_status_show_the_phase_while_loading(
    agent: AgentCli,
    model_dir: Path,
    user_manager,  # noqa: ANN001
) -> None:
    agent.write_deployment("slow", f'model = "{model_dir}"\nargs = ["--fake-load-time", "6"]\ntests = []\n')
    agent.ok("start", "slow", "--no-wait")
    text = wait_for(
        "the loading phase in StatusText",
        lambda: "loading" in (s := user_manager.show("vllm@slow.service", "StatusText")["StatusText"]) and s,
        timeout=30,
    )
    assert user_manager.show("vllm@slow.service", "ActiveState")["ActiveState"] == "activating", text
    row = agent.status("slow")
    assert row["state"] == "starting" and "loading" in row["reason"]
    assert "starting" in agent.run("status", "slow").stdout
    wait_for("slow ready", lambda: agent.status("slow")["state"] == "ready", timeout=60)


def test_status_without_a_name_has_one_line_per_deployment(agent: AgentCli, model_dir: Path) -> None:
    for name in ("one", "two"):
        agent.write_deployment(name, f'model = "{model_dir}"\nargs = ["--fake-load-time", "0.2"]\ntests = []\n')
    agent.ok("start", "one")
    agent.ok("deploy", "three", "--model", str(model_dir), "--no-start")
    done = agent.run("status")
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["one", "ready"],
        ["three", "stopped"],
        ["two", "stopped"],
    ]
    assert "wanted, not started yet" in lines[2]  # dropped into models.d/, nothing started it
    assert done.returncode == 3


def test_logs_follow_shows_new_engine_output_as_it_comes(agent: AgentCli, model_dir: Path) -> None:
    agent.write_deployment("chatty", f'model = "{model_dir}"\nargs = ["--fake-load-time", "0.2"]\ntests = []\n')
    agent.ok("start", "chatty")
    url = agent.status("chatty")["url"]
    follower = subprocess.Popen(
        [str(AGENT), "--user", "--config-dir", str(agent.config_dir), "logs", "chatty", "-f", "-n", "0"],
        env=agent.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        marker = "/v1/models?marker=logs-follow"
        seen = b""

        def arrived() -> bool:
            nonlocal seen
            httpx.get(url + marker, timeout=5)
            assert follower.stdout is not None
            while select.select([follower.stdout], [], [], 0.2)[0]:
                chunk = follower.stdout.read1(65536)
                if not chunk:
                    break
                seen += chunk
            return b"logs-follow" in seen

        wait_for("the request's line in logs -f", arrived, timeout=20, every=0.3)
    finally:
        follower.terminate()
        follower.wait(timeout=10)
