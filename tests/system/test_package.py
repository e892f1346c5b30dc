"""The .deb on a clean, booted Debian 12: what it installs, and the daemon it starts."""

from __future__ import annotations

import stat

from booted import Machine
from steps import Packages, install

# path: (owner, group, mode)
EXPECTED = {
    "/opt/vllm-agent/bin/vllm-agent": ("root", "root", 0o755),
    "/usr/lib/systemd/system/vllm@.service": ("root", "root", 0o644),
    "/usr/lib/systemd/system/vllm@.service.d/10-system.conf": ("root", "root", 0o644),
    "/usr/lib/systemd/system/vllm-agent.service": ("root", "root", 0o644),
    "/usr/lib/systemd/system/vllm-agent-gateway.service": ("root", "root", 0o644),
    "/usr/lib/sysusers.d/vllm-agent.conf": ("root", "root", 0o644),
    "/usr/lib/tmpfiles.d/vllm-agent.conf": ("root", "root", 0o644),
    "/usr/share/polkit-1/rules.d/50-vllm-agent.rules": ("root", "root", 0o644),
    "/usr/share/bash-completion/completions/vllm-agent": ("root", "root", 0o644),
    "/usr/share/man/man1/vllm-agent.1.gz": ("root", "root", 0o644),
    "/etc/vllm-agent/agent.toml": ("root", "root", 0o644),
    "/etc/vllm-agent/models.d": ("root", "root", 0o755),
    "/etc/vllm-agent/tests.d": ("root", "root", 0o755),
    "/etc/vllm-agent/credentials": ("root", "root", 0o700),
    "/var/lib/vllm-agent": ("vllm", "vllm-admin", 0o750),
    "/var/lib/vllm-agent/deployments": ("vllm", "vllm-admin", 0o750),
    "/var/cache/vllm-agent": ("vllm", "vllm", 0o750),
    "/run/vllm-agent": ("root", "vllm-admin", 0o750),
}


def test_install_creates_the_files_the_user_and_a_running_daemon(machine: Machine, packages: Packages) -> None:
    install(machine, packages)
    for path, (owner, group, mode) in EXPECTED.items():
        found = machine.run("stat", "-c", "%U %G %f", path).stdout.split()
        assert (found[0], found[1], stat.S_IMODE(int(found[2], 16))) == (owner, group, mode), path
    assert machine.run("readlink", "/usr/bin/vllm-agent").stdout.strip() == "/opt/vllm-agent/bin/vllm-agent"
    # The venv runs on the distribution's python3.11, not on anything from the build host.
    assert machine.run("readlink", "-f", "/opt/vllm-agent/bin/python").stdout.strip() == "/usr/bin/python3.11"

    passwd = machine.run("getent", "passwd", "vllm").stdout.strip().split(":")
    assert passwd[5] == "/var/lib/vllm-agent" and passwd[6] == "/usr/sbin/nologin"
    assert int(passwd[2]) < 1000, "a system user"
    groups = machine.run("id", "-nG", "vllm").stdout.split()
    assert {"video", "render"} <= set(groups) and "vllm-admin" not in groups
    machine.run("getent", "group", "vllm-admin")

    assert machine.run("systemctl", "is-enabled", "vllm-agent.service").stdout.strip() == "enabled"
    assert machine.run("systemctl", "is-active", "vllm-agent.service").stdout.strip() == "active"
    # The daemon runs as root (it writes unit files and talks to the system manager).
    assert machine.run("systemctl", "show", "-P", "User", "vllm-agent.service").stdout.strip() == ""

    assert machine.run("vllm-agent", "--version").stdout.strip() == f"vllm-agent {packages.version}"
    machine.run("vllm-agent", "validate")  # the packaged agent.toml is valid as shipped
    # The man page and the completion were generated from the parser: every command is there.
    man = machine.run("sh", "-c", "zcat /usr/share/man/man1/vllm-agent.1.gz").stdout
    completion = machine.run("cat", "/usr/share/bash-completion/completions/vllm-agent").stdout
    for command in ("deploy", "status", "logs", "validate"):
        assert f".SS {command}" in man and command in completion


def test_validate_names_the_file_and_key_of_a_bad_system_config(machine: Machine, packages: Packages) -> None:
    install(machine, packages)
    machine.sh("echo 'port_range = [9000, 8000]' >> /etc/vllm-agent/agent.toml")
    done = machine.run("vllm-agent", "validate", check=False)
    assert done.returncode == 2
    assert "/etc/vllm-agent/agent.toml" in done.stdout + done.stderr and "port_range" in done.stdout + done.stderr
