"""README promises about what an operator sees: the phase in `systemctl status`, the `starting`
state, `status` without a name, `logs -f`."""

from __future__ import annotations

import json
import select
import subprocess
import threading
import time
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


def test_a_site_plugins_unit_directives_reach_the_unit_and_make_it_stale(
    agent: AgentCli,
    model_dir: Path,
    user_manager,  # noqa: ANN001
) -> None:
    # tests/plugins/sitehooks: a third-party plugin registered by entry point.
    agent.write_deployment("policy", f'model = "{model_dir}"\nargs = ["--fake-load-time", "0.2"]\ntests = []\n')
    env = agent.env | {"VLLM_AGENT_TEST_DIRECTIVES": json.dumps({"Service": ["CPUWeight=42"]})}
    site = AgentCli(agent.config_dir, env, agent.log_dir, agent.state_dir)
    site.ok("start", "policy")
    assert "CPUWeight=42" in user_manager.systemctl("cat", "vllm@policy.service").stdout
    assert user_manager.show("vllm@policy.service", "CPUWeight") == {"CPUWeight": "42"}
    # The policy changes: the rendered unit differs, so the running one is stale until restarted.
    changed = AgentCli(
        agent.config_dir,
        agent.env | {"VLLM_AGENT_TEST_DIRECTIVES": '{"Service": ["CPUWeight=43"]}'},
        agent.log_dir,
        agent.state_dir,
    )
    assert "CPUWeight=43" in changed.ok("render", "policy").stdout  # render writes nothing...
    assert user_manager.show("vllm@policy.service", "CPUWeight") == {"CPUWeight": "42"}
    before = user_manager.show("vllm@policy.service", "InvocationID")["InvocationID"]
    changed.ok("start", "policy")  # ...start sees the running unit is stale and restarts it
    after = user_manager.show("vllm@policy.service", "InvocationID", "ActiveState", "CPUWeight")
    assert after["InvocationID"] != before
    assert (after["ActiveState"], after["CPUWeight"]) == ("active", "43")


def test_the_daemon_starts_new_cleans_removed_and_leaves_failed_alone_with_one_reload(
    agent: AgentCli,
    model_dir: Path,
    user_manager,  # noqa: ANN001
) -> None:
    fast = 'args = ["--fake-load-time", "0.2"]\ntests = []\n'
    agent.write_deployment("keep", f'model = "{model_dir}"\n{fast}')
    agent.write_deployment("gone", f'model = "{model_dir}"\n{fast}')
    agent.write_deployment(
        "broken",
        f'model = "{model_dir}"\nargs = ["--fake-mode", "exit-at-start"]\n[restart]\nmax_restarts = 0\n',
    )
    for name in ("keep", "gone"):
        agent.ok("start", name)
    assert agent.run("start", "broken").returncode != 0
    failed = user_manager.show("vllm@broken.service", "ActiveState", "NRestarts", "InvocationID")
    assert failed["ActiveState"] == "failed"
    user_manager.systemctl("start", "vllm-agent.service")
    wait_for("the daemon's first pass", lambda: "daemon ready" in agent.log("vllm-agent"))

    with ReloadWatch(user_manager) as reloads:
        agent.model_file("gone").unlink()
        agent.write_deployment("fresh", f'model = "{model_dir}"\n{fast}')
        agent.ok("reload")
        wait_for("fresh ready", lambda: agent.status("fresh")["state"] == "ready", timeout=60)
        wait_for("gone cleaned", lambda: not (user_manager.unit_dir / "vllm@gone.service.d").exists())
        assert reloads.count() == 1  # one daemon-reload for the whole batch
    assert user_manager.show("vllm@gone.service", "ActiveState") == {"ActiveState": "inactive"}
    # Never started again: the same failed invocation, the same count.
    assert user_manager.show("vllm@broken.service", "ActiveState", "NRestarts", "InvocationID") == failed
    assert agent.status("keep")["state"] == "ready"


class ReloadWatch:
    """Counts systemd's completed daemon-reloads from its Reloading signals (payload true when
    one starts, false when it ends), watched with busctl. Reloads of our own first prove the
    monitor is listening: `systemctl daemon-reload` returns once its reload ended."""

    def __init__(self, user_manager) -> None:  # noqa: ANN001
        self.ends = 0
        self.process = subprocess.Popen(
            [
                "busctl",
                "--user",
                "monitor",
                "--json=short",
                "--match",
                "type='signal',interface='org.freedesktop.systemd1.Manager',member='Reloading'",
            ],
            env=user_manager.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            deadline = time.monotonic() + 30
            while not self.ends:
                assert time.monotonic() < deadline, "busctl monitor saw no end of a daemon-reload"
                user_manager.daemon_reload()
                time.sleep(0.3)  # busctl prints what it saw a moment after the reload returned
            self.baseline = self.ends
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                started = json.loads(line)["payload"]["data"][0]
            except (ValueError, KeyError, IndexError, TypeError):
                continue
            if started is False:
                self.ends += 1

    def count(self) -> int:
        """Reloads completed since the watch began."""
        return self.ends - self.baseline

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.reader.join(timeout=10)

    def __enter__(self) -> ReloadWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
