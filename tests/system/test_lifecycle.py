"""The package's life on a host: reboots, upgrades, removal and purge."""

from __future__ import annotations

from pathlib import Path

from booted import Booter, Machine
from steps import Packages, deployment, http_status, install, show, use_fake_engine

EDIT = "# edited by the operator\n"


def test_reboot_brings_back_wanted_deployments_and_keeps_stopped_ones_stopped(
    boot: Booter, root_copy: Path, packages: Packages
) -> None:
    machine = boot(root_copy, ephemeral=False)
    install(machine, packages)
    use_fake_engine(machine)
    for name in ("up", "down"):
        machine.run("vllm-agent", "deploy", name, "--model", "/srv/models/tiny", timeout=300)
    machine.run("vllm-agent", "stop", "down", timeout=300)
    assert deployment(machine, "down")["state"] == "stopped"
    machine.poweroff()

    machine = boot(root_copy, ephemeral=False)
    # Back with no one asking: the enabled instance starts at boot and is ready when serving.
    machine.run("systemctl", "start", "multi-user.target", timeout=300)  # waits for boot's jobs
    up = _wait_state(machine, "up", "ready")
    assert http_status(machine, f"http://127.0.0.1:{up['port']}/health") == 200
    assert show(machine, "vllm@down.service", "ActiveState") == "inactive"
    assert deployment(machine, "down")["desired"] == "stopped"


def test_upgrade_keeps_config_and_the_running_engine_remove_keeps_config_purge_removes_it(
    machine: Machine, packages: Packages, newer_packages: Packages
) -> None:
    install(machine, packages)
    use_fake_engine(machine)
    machine.sh(f"printf '{EDIT}' >> /etc/vllm-agent/agent.toml")
    edited = machine.run("cat", "/etc/vllm-agent/agent.toml").stdout
    machine.run("vllm-agent", "deploy", "x", "--model", "/srv/models/tiny", timeout=300)
    engine_pid = show(machine, "vllm@x.service", "MainPID")
    daemon = show(machine, "vllm-agent.service", "InvocationID")

    machine.run("dpkg", "-i", newer_packages.deb_inside, timeout=300)
    assert machine.run("vllm-agent", "--version").stdout.strip() == f"vllm-agent {newer_packages.version}"
    assert machine.run("cat", "/etc/vllm-agent/agent.toml").stdout == edited, "the operator's edit survives"
    assert show(machine, "vllm@x.service", "MainPID") == engine_pid, "the engine was not restarted"
    assert show(machine, "vllm-agent.service", "ActiveState") == "active"
    assert show(machine, "vllm-agent.service", "InvocationID") != daemon, "the daemon runs the new code"

    machine.run("dpkg", "-r", "vllm-agent", timeout=300)
    assert machine.run("cat", "/etc/vllm-agent/agent.toml").stdout == edited
    assert machine.run("test", "-f", "/etc/vllm-agent/models.d/x.toml", check=False).returncode == 0
    assert machine.run("test", "-e", "/opt/vllm-agent/bin/vllm-agent", check=False).returncode != 0
    assert show(machine, "vllm-agent.service", "LoadState") == "not-found"
    assert show(machine, "vllm@x.service", "ActiveState") == "inactive", "no unit left without its program"

    machine.run("dpkg", "--purge", "vllm-agent", timeout=300)
    for path in ("/etc/vllm-agent", "/var/lib/vllm-agent", "/etc/systemd/system/vllm@x.service.d"):
        assert machine.run("test", "-e", path, check=False).returncode != 0, f"{path} is gone after purge"


def _wait_state(machine: Machine, name: str, state: str, timeout: float = 180.0) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = deployment(machine, name)
        if found["state"] == state:
            return found
        assert time.monotonic() < deadline, f"{name} is {found['state']}, not {state}, after {timeout}s: {found}"
        time.sleep(0.5)
