"""Deployments under the booted system manager, as the vllm user, and who may drive them."""

from __future__ import annotations

import json
import re

import pytest
from booted import Machine
from steps import Packages, deployment, http_status, install, proc_user, show, unit_pids, use_fake_engine

UNIT = "vllm@x.service"


@pytest.fixture
def deployed(machine: Machine, packages: Packages) -> Machine:
    """The package installed and deployment x serving the fake engine, loading for 3 s."""
    install(machine, packages)
    use_fake_engine(machine)
    machine.run("vllm-agent", "deploy", "x", "--model", "/srv/models/tiny", "--", "--fake-load-time", "3", timeout=300)
    return machine


def test_deploy_serves_as_the_vllm_user_and_the_journal_has_its_output(deployed: Machine) -> None:
    machine = deployed
    port = deployment(machine, "x")["port"]
    assert http_status(machine, f"http://127.0.0.1:{port}/health") == 200
    # Every process of the unit (launcher, API server, EngineCore) runs as vllm, never root.
    pids = unit_pids(machine, UNIT)
    assert len(pids) >= 3 and {proc_user(machine, pid) for pid in pids} == {"vllm"}
    journal = machine.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    assert "Application startup complete." in journal
    logs = machine.run("vllm-agent", "logs", "x", "-n", "200").stdout.splitlines()
    assert "INFO:     Application startup complete." in logs, "the engine's lines as they came"
    ready = re.compile(rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d INFO +\[x\] ready  url=http://127\.0\.0\.1:{port} ")
    assert any(ready.match(line) for line in logs), "the agent's lines rendered: time, level, event, fields"
    raw = machine.run("vllm-agent", "logs", "x", "-n", "200", "--json", "--since", "1 hour ago").stdout
    events = [json.loads(line)["event"] for line in raw.splitlines() if line.startswith("{")]
    assert "ready" in events
    status = machine.run("vllm-agent", "status", "x").stdout
    assert "ready" in status and f":{port}" in status


def test_the_engine_runs_in_the_sandbox_and_systemd_accepts_the_units(deployed: Machine) -> None:
    machine = deployed
    pid = show(machine, UNIT, "MainPID")
    status = dict(
        line.split(":", 1) for line in machine.run("cat", f"/proc/{pid}/status").stdout.splitlines() if ":" in line
    )
    assert int(status["CapBnd"].strip(), 16) == 0, "no capabilities, not even to regain"
    assert status["NoNewPrivs"].strip() == "1"
    # ProtectSystem=strict: the engine sees / read-only, its state and cache writable.
    mounts = {}
    for line in machine.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")
    assert "ro" in mounts["/"], mounts
    assert "rw" in mounts["/var/lib/vllm-agent"] and "rw" in mounts["/var/cache/vllm-agent"]
    assert "/tmp" in mounts, "a private /tmp"
    # The template, the system drop-in and the rendered drop-in together: no complaint.
    verified = machine.run("systemd-analyze", "verify", UNIT, check=False)
    assert verified.returncode == 0 and "vllm" not in verified.stderr, verified.stderr


def test_plain_systemctl_start_returns_only_once_the_engine_serves(deployed: Machine) -> None:
    machine = deployed
    port = deployment(machine, "x")["port"]
    machine.run("systemctl", "stop", UNIT)
    assert http_status(machine, f"http://127.0.0.1:{port}/health") is None
    machine.run("systemctl", "start", UNIT, timeout=300)  # blocks until READY=1
    # The fake engine loads for 3 s and listens only afterwards: had start returned early,
    # nothing would answer yet.
    assert http_status(machine, f"http://127.0.0.1:{port}/health") == 200
    assert show(machine, UNIT, "ActiveState") == "active"
    assert proc_user(machine, int(show(machine, UNIT, "MainPID"))) == "vllm"


def test_vllm_admin_members_drive_deployments_and_nothing_else(deployed: Machine) -> None:
    machine = deployed
    machine.sh(
        "useradd -m alice && useradd -m bob && usermod -aG vllm-admin alice\n"
        # Units an admin must not touch, including look-alikes of the template's name.
        "for unit in ssh.service vllm-evil.service vllmx@.service; do\n"
        "  printf '[Service]\\nExecStart=/bin/sleep 600\\n' > /etc/systemd/system/$unit\n"
        "done\n"
        "systemctl daemon-reload"
    )

    def allowed(user: str, *args: str) -> bool:
        return machine.run("systemctl", *args, user=user, check=False, timeout=300).returncode == 0

    for verb in ("stop", "start", "restart"):
        assert allowed("alice", verb, UNIT), f"alice (vllm-admin) may {verb} {UNIT}"
    assert show(machine, UNIT, "ActiveState") == "active"
    assert allowed("alice", "reset-failed", UNIT)
    for unit in ("ssh.service", "vllm-evil.service", "vllmx@y.service"):
        assert not allowed("alice", "start", unit), f"alice may not start {unit}"
        assert show(machine, unit, "ActiveState") == "inactive"
    assert not allowed("alice", "enable", UNIT)
    assert not allowed("alice", "set-property", UNIT, "CPUWeight=5")
    # Unit files: enabling, linking and reloading them are manage-unit-files / reload-daemon.
    assert not allowed("alice", "link", "/etc/systemd/system/vllm-evil.service")
    assert not allowed("alice", "daemon-reload")
    assert show(machine, UNIT, "CPUWeight") != "5"
    # An operator reads the daemon's status directly (its socket is the group's), no fallback.
    status = machine.run("vllm-agent", "status", "x", "--json", user="alice", check=False)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["source"] == "daemon", status.stdout

    main_pid = show(machine, UNIT, "MainPID")
    for verb in ("stop", "restart", "start"):
        assert not allowed("bob", verb, UNIT), f"bob (not in vllm-admin) may not {verb} {UNIT}"
    assert not allowed("bob", "start", "vllm-evil.service")
    # The refusals changed nothing: the same engine still serves.
    assert show(machine, UNIT, "MainPID") == main_pid
