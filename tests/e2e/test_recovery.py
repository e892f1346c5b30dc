"""Faults after ready: crashed, dead and hung engines are found and restarted, with and without
the agent daemon; restart storms stop with a reason."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness.agent_cli import AgentCli
from harness.processes import wait_for


def engine_pid(user_manager, name: str) -> int:  # noqa: ANN001
    """The engine is the launcher's child in the unit's cgroup."""
    launcher = int(user_manager.show(f"vllm@{name}.service", "MainPID")["MainPID"])
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    return int(children[0])


def show(user_manager, name: str) -> dict[str, str]:  # noqa: ANN001
    return user_manager.show(
        f"vllm@{name}.service",
        "ActiveState",
        "SubState",
        "NRestarts",
        "MainPID",
        "Result",
        "InvocationID",
        "StatusText",
    )


def ready_again(agent: AgentCli, user_manager, name: str, restarts: int, timeout: float = 30) -> dict[str, str]:  # noqa: ANN001
    return wait_for(
        f"{name} ready after {restarts} restart(s)",
        lambda: (
            (state := show(user_manager, name))["ActiveState"] == "active"
            and int(state["NRestarts"]) >= restarts
            and state
        ),
        timeout,
    )


@pytest.fixture(params=["without-daemon", "with-daemon"])
def daemon(request, agent: AgentCli, user_manager) -> Iterator[bool]:  # noqa: ANN001
    if request.param == "with-daemon":
        user_manager.systemctl("start", "vllm-agent.service")
        yield True
        user_manager.systemctl("stop", "vllm-agent.service", check=False)
    else:
        yield False


def deploy(agent: AgentCli, model_dir: Path, name: str, *engine_args: str, extra: str = "") -> dict:
    agent.write_deployment(name, f'model = "{model_dir}"\nargs = {list(engine_args)!r}\n'.replace("'", '"') + extra)
    agent.ok("start", name)
    return agent.status(name)


def transitions(agent: AgentCli, name: str) -> list[dict]:
    return agent.status(name).get("transitions", [])


def test_sigkill_of_the_engine_is_restarted_and_counted(agent, model_dir, user_manager, daemon) -> None:  # noqa: ANN001
    deploy(agent, model_dir, "kill9", "--fake-load-time", "0.3", extra="[restart]\nmax_restarts = 3\n")
    first = show(user_manager, "kill9")
    os.kill(engine_pid(user_manager, "kill9"), signal.SIGKILL)
    state = ready_again(agent, user_manager, "kill9", 1)
    assert state["MainPID"] != first["MainPID"]
    status = agent.status("kill9")
    assert status["state"] == "ready" and status["restarts"] == 1
    if daemon:
        kinds = wait_for("the daemon's record", lambda: [t["kind"] for t in transitions(agent, "kill9")])
        assert "restarted" in kinds


def test_external_sigterm_of_the_unit_is_a_restart_not_a_stop(agent, model_dir, user_manager, daemon) -> None:  # noqa: ANN001
    deploy(agent, model_dir, "term", "--fake-load-time", "0.3", extra="[restart]\nmax_restarts = 3\n")
    os.kill(int(show(user_manager, "term")["MainPID"]), signal.SIGTERM)
    ready_again(agent, user_manager, "term", 1)
    assert agent.status("term")["state"] == "ready"


def test_exit_zero_after_engine_death_is_restarted(agent, model_dir, user_manager, daemon) -> None:  # noqa: ANN001
    deploy(
        agent,
        model_dir,
        "dead0",
        "--fake-load-time",
        "0.3",
        "--fake-mode",
        "engine-death-after:1",
        # The health checks would also catch the 503; a high threshold leaves it to Restart=always.
        extra="[restart]\nmax_restarts = 5\nwindow = 120\n[health]\nfailure_threshold = 50\n",
    )
    ready_again(agent, user_manager, "dead0", 1)
    # vLLM's own last words name the failure (not "exited with status 0"), and it is restartable.
    failed = [line for line in agent.log("dead0").splitlines() if '"event": "failed"' in line]
    assert failed and '"reason": "the engine\'s core died (EngineDeadError) after it was ready"' in failed[0], failed
    assert '"permanent": false' in failed[0]


def test_hung_engine_with_healthy_health_endpoint_is_restarted(agent, model_dir, user_manager, daemon) -> None:  # noqa: ANN001
    # /health stays 200 while generation hangs: only the completion check can tell.
    deploy(
        agent,
        model_dir,
        "hang",
        "--fake-load-time",
        "0.3",
        "--fake-mode",
        "hang-after:1",
        extra='[restart]\nmax_restarts = 5\nwindow = 120\n[health]\nchecks = ["http", "completion"]\n',
    )
    # How fast it is noticed is bench/recovery.py's figure (hang -> NRestarts+1), not a test's.
    wait_for("the watchdog restart", lambda: int(show(user_manager, "hang")["NRestarts"]) >= 1, timeout=30)
    log = agent.log("hang")
    assert '"event": "unhealthy"' in log and '"check": "completion"' in log
    if daemon:
        reasons = wait_for(
            "the daemon's record", lambda: [t["reason"] for t in transitions(agent, "hang") if t["kind"] == "restarted"]
        )
        assert any("unhealthy: completion" in reason for reason in reasons)


def test_a_single_slow_check_does_not_restart(agent, model_dir, user_manager) -> None:  # noqa: ANN001
    deploy(
        agent,
        model_dir,
        "pause",
        "--fake-load-time",
        "0.3",
        extra="[health]\ninterval = 0.5\ntimeout = 0.5\nfailure_threshold = 6\n",
    )
    engine = engine_pid(user_manager, "pause")
    os.kill(engine, signal.SIGSTOP)  # a stall, like a long GC pause
    try:
        # Evidence that the checks ran into the stall before it ends...
        wait_for("a failed check", lambda: '"event": "health check failed"' in agent.log("pause"), timeout=20)
    finally:
        os.kill(engine, signal.SIGCONT)
    # ...and that a later round passed again: the status line is back to plain serving.
    wait_for(
        "a passing check after the stall",
        lambda: (
            show(user_manager, "pause")["StatusText"].startswith("serving ")
            and "failed" not in show(user_manager, "pause")["StatusText"]
        ),
        timeout=20,
    )
    state = show(user_manager, "pause")
    assert state["NRestarts"] == "0" and state["ActiveState"] == "active"
    assert httpx.get(f"{agent.status('pause')['url']}/health", timeout=5).status_code == 200


def test_immediate_exit_gets_exactly_the_configured_starts(agent, model_dir, user_manager) -> None:  # noqa: ANN001
    agent.write_deployment(
        "storm",
        f'model = "{model_dir}"\nargs = ["--fake-mode", "exit-at-start", '
        '"--fake-load-time", "0.1"]\n[restart]\nmax_restarts = 2\nmin_delay = 0.2\n',
    )
    done = agent.run("start", "storm")
    assert done.returncode == 1
    # systemd schedules nothing more for a failed unit: its own word that the count is final.
    assert show(user_manager, "storm")["ActiveState"] == "failed"
    assert agent.log("storm").count('"event": "engine started"') == 3
    status = agent.status("storm")
    assert status["state"] == "failed" and status["reason"].startswith("start limit hit: 3 starts within 60s")


def test_crash_after_a_long_load_ends_in_crash_loop(agent, model_dir, user_manager) -> None:  # noqa: ANN001
    # Each start loads longer than the start-limit window, so systemd alone would loop forever.
    agent.write_deployment(
        "slowcrash",
        f'model = "{model_dir}"\nargs = ["--fake-mode", "exit-at-start", '
        '"--fake-load-time", "1.5"]\n[restart]\nmax_restarts = 10\nwindow = 1\nmin_delay = 0.2\n'
        "max_startup_failures = 2\n",
    )
    done = agent.run("start", "slowcrash")
    assert done.returncode == 1
    status = agent.status("slowcrash")
    assert status["state"] == "crash-loop"
    assert status["reason"].startswith("crash-loop: 2 starts in a row never became ready")
    assert agent.log("slowcrash").count('"event": "engine started"') == 2
    # `vllm-agent start` is the operator's reset: it tries again from zero.
    assert agent.run("start", "slowcrash").returncode == 1
    assert agent.log("slowcrash").count('"event": "engine started"') == 4


def test_daemon_sigkill_changes_nothing_for_serving_deployments(agent, model_dir, user_manager) -> None:  # noqa: ANN001
    deploy(agent, model_dir, "steady", "--fake-load-time", "0.3")
    user_manager.systemctl("start", "vllm-agent.service")
    before = show(user_manager, "steady")
    user_manager.systemctl("kill", "-s", "KILL", "vllm-agent.service")
    wait_for(
        "the daemon back",
        lambda: (
            user_manager.show("vllm-agent.service", "ActiveState", "NRestarts")
            == {"ActiveState": "active", "NRestarts": "1"}
        ),
    )
    after = show(user_manager, "steady")
    assert (after["MainPID"], after["InvocationID"], after["NRestarts"]) == (
        before["MainPID"],
        before["InvocationID"],
        "0",
    )
    status = wait_for(
        "the daemon's API", lambda: agent.status("steady").get("transitions") is not None and agent.status("steady")
    )
    assert status["state"] == "ready"


def test_config_edit_restarts_only_the_changed_deployment(agent, model_dir, user_manager) -> None:  # noqa: ANN001
    deploy(agent, model_dir, "keep", "--fake-load-time", "0.3")
    deploy(agent, model_dir, "edit", "--fake-load-time", "0.3")
    user_manager.systemctl("start", "vllm-agent.service")
    keep, edit = show(user_manager, "keep"), show(user_manager, "edit")
    path = agent.model_file("edit")
    path.write_text(path.read_text() + "max_model_len = 128\n")
    agent.ok("reload")
    wait_for(
        "edit restarted",
        lambda: (
            (s := show(user_manager, "edit"))["InvocationID"] != edit["InvocationID"] and s["ActiveState"] == "active"
        ),
    )
    assert show(user_manager, "keep")["InvocationID"] == keep["InvocationID"]
    assert "--max-model-len 128" in user_manager.systemctl("cat", "vllm@edit.service").stdout


def test_daemon_notices_a_crash_that_happened_while_the_bus_was_down(agent, model_dir, user_manager) -> None:  # noqa: ANN001
    deploy(agent, model_dir, "busdrop", "--fake-load-time", "0.3", extra="[restart]\nmax_restarts = 3\n")
    user_manager.systemctl("start", "vllm-agent.service")
    wait_for("the daemon's API", lambda: agent.status("busdrop").get("transitions") is not None)
    # Restarting the user bus drops every client's connection.
    user_manager.systemctl("stop", "dbus.service", "dbus.socket")
    os.kill(engine_pid(user_manager, "busdrop"), signal.SIGKILL)
    ready_again(agent, user_manager, "busdrop", 1)
    user_manager.systemctl("start", "dbus.socket")
    reasons = wait_for(
        "the daemon to notice",
        lambda: [t["reason"] for t in transitions(agent, "busdrop") if t["kind"] == "restarted"],
        timeout=30,
    )
    assert reasons


def test_daemon_serves_prometheus_metrics_on_its_socket(agent, model_dir, user_manager) -> None:  # noqa: ANN001
    deploy(agent, model_dir, "metered", "--fake-load-time", "0.3")
    user_manager.systemctl("start", "vllm-agent.service")
    transport = httpx.HTTPTransport(uds=str(agent.config_dir.parent / "agent.sock"))
    with httpx.Client(transport=transport, base_url="http://agent") as client:
        text = wait_for("metrics", lambda: (r := client.get("/metrics")).status_code == 200 and r.text)
        status = client.get("/v1/status").json()
    assert 'vllm_agent_deployment_state{deployment="metered",state="ready"} 1' in text
    assert 'vllm_agent_restarts_total{deployment="metered"} 0' in text
    assert "vllm_agent_time_to_ready_seconds" in text
    assert [row["name"] for row in status["deployments"]] == ["metered"]


def test_external_deployment_is_checked_and_reported_by_the_daemon(agent, model_dir, user_manager, tmp_path) -> None:  # noqa: ANN001
    import subprocess
    import sys

    from harness.agent_cli import FAKE_ENGINE
    from harness.ports import PortLease

    lease = PortLease()  # held while the engine binds it beside us, as vLLM does
    port = lease.port
    engine = subprocess.Popen(
        [
            sys.executable,
            str(FAKE_ENGINE),
            "--model",
            "m",
            "--served-model-name",
            "ext",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--fake-load-time",
            "0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        agent.write_deployment(
            "ext", f'model = "org/m"\nmode = "external"\nurl = "http://127.0.0.1:{port}"\n[health]\ninterval = 0.5\n'
        )
        user_manager.systemctl("start", "vllm-agent.service")
        assert wait_for("ext ready", lambda: agent.status("ext").get("state") == "ready", timeout=30)
        os.killpg(engine.pid, signal.SIGKILL)
        engine.wait()
        row = wait_for("ext unhealthy", lambda: (s := agent.status("ext"))["state"] == "unhealthy" and s, timeout=30)
        assert "connection refused" in row["reason"]
    finally:
        try:
            os.killpg(engine.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        engine.wait()
        lease.release()


def test_a_broken_file_leaves_its_running_deployment_alone(agent, model_dir, user_manager) -> None:  # noqa: ANN001
    deploy(agent, model_dir, "typo", "--fake-load-time", "0.3")
    user_manager.systemctl("start", "vllm-agent.service")
    passes = wait_for("the daemon's first pass", lambda: agent.log("vllm-agent").count('"event": "reconciled"'))
    before = show(user_manager, "typo")
    path = agent.model_file("typo")
    path.write_text(path.read_text() + "gpu_memory_utilization = 7\n")
    done = agent.ok("reload")
    assert "gpu_memory_utilization: must be > 0 and <= 1, got 7" in done.stderr
    wait_for("the pass after the reload", lambda: agent.log("vllm-agent").count('"event": "reconciled"') > passes)
    after = show(user_manager, "typo")
    assert (after["ActiveState"], after["InvocationID"]) == ("active", before["InvocationID"])
    assert (user_manager.unit_dir / "vllm@typo.service.d").exists()
