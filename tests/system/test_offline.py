"""The packages where systemd does not run (chroots, image builds), and their linters."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from booted import Booter
from steps import Packages

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
# systemctl in the root, replaced by a recorder: where systemd is not running, no maintainer
# script may call it (it would act on the build host, or fail the install).
RECORDER = '#!/bin/sh\necho "$@" >> /systemctl-called\nexit 1\n'
SHIPPED = (
    "/usr/bin/vllm-agent",
    "/opt/vllm-agent/bin/vllm-agent",
    "/usr/lib/systemd/system/vllm@.service",
    "/usr/lib/systemd/system/vllm@.service.d/10-system.conf",
    "/usr/lib/systemd/system/vllm-agent.service",
    "/usr/lib/systemd/system/vllm-agent-gateway.service",
    "/usr/lib/sysusers.d/vllm-agent.conf",
    "/usr/lib/tmpfiles.d/vllm-agent.conf",
    "/usr/share/polkit-1/rules.d/50-vllm-agent.rules",
    "/etc/vllm-agent/agent.toml",
    "/etc/vllm-agent/credentials",
)


def _offline_root(root_copy: Path) -> Path:
    for systemctl in ("usr/bin/systemctl", "bin/systemctl"):
        path = root_copy / systemctl
        if path.exists() and not path.is_symlink():
            path.write_text(RECORDER)
            path.chmod(0o755)
    assert not (root_copy / "run/systemd/system").exists()
    return root_copy


def _check_installed_offline(root: Path) -> None:
    assert not (root / "systemctl-called").exists(), (root / "systemctl-called").read_text()
    for path in SHIPPED:
        assert (root / path.lstrip("/")).exists() or (root / path.lstrip("/")).is_symlink(), path
    passwd = (root / "etc/passwd").read_text()
    assert any(line.startswith("vllm:") for line in passwd.splitlines())
    assert any(line.startswith("vllm-admin:") for line in (root / "etc/group").read_text().splitlines())
    # Enabled for the first boot, as `systemctl enable` would have.
    wants = root / "etc/systemd/system/multi-user.target.wants/vllm-agent.service"
    assert wants.is_symlink() and str(wants.readlink()) == "/usr/lib/systemd/system/vllm-agent.service"


def test_deb_installs_into_an_image_without_systemctl_and_serves_at_first_boot(
    boot: Booter, root_copy: Path, packages: Packages
) -> None:
    root = _offline_root(root_copy)
    done = subprocess.run(
        ["dpkg", f"--root={root}", "-i", str(packages.deb)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _check_installed_offline(root)
    # The image's first boot: the real systemctl back, and the daemon comes up by itself.
    for systemctl in ("usr/bin/systemctl", "bin/systemctl"):
        if (root_copy / systemctl).exists() and not (root_copy / systemctl).is_symlink():
            subprocess.run(["cp", "-a", str(Path("/") / systemctl), str(root_copy / systemctl)], check=True)
    machine = boot(root, ephemeral=False)
    assert machine.run("systemctl", "is-active", "vllm-agent.service", check=False).stdout.strip() == "active"
    owner = machine.run("stat", "-c", "%U:%G %a", "/var/lib/vllm-agent").stdout.strip()
    assert owner == "vllm:vllm-admin 750"


def test_rpm_file_list_scriptlets_and_install_into_a_scratch_root(root_copy: Path, packages: Packages) -> None:
    listed = subprocess.run(["rpm", "-qlp", str(packages.rpm)], capture_output=True, text=True, check=True).stdout
    for path in SHIPPED:
        assert path in listed.splitlines(), path
    scripts = subprocess.run(["rpm", "-qp", "--scripts", str(packages.rpm)], capture_output=True, text=True, check=True)
    for phase in ("postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"):
        assert phase in scripts.stdout
    configs = subprocess.run(["rpm", "-qcp", str(packages.rpm)], capture_output=True, text=True, check=True).stdout
    assert "/etc/vllm-agent/agent.toml" in configs.splitlines()

    # rpm --root runs the scriptlets chrooted: into a copy of the Debian root, which has
    # systemd-sysusers and a shell but no running systemd (the deps are Debian's, not rpm's).
    root = _offline_root(root_copy)
    done = subprocess.run(
        ["rpm", f"--root={root}", "--nodeps", "-i", str(packages.rpm)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _check_installed_offline(root)
    mode = (root / "etc/vllm-agent/credentials").stat().st_mode & 0o777
    assert mode == 0o700


@pytest.mark.parametrize(
    ("linter", "distro"),
    [("lintian", "debian12"), ("lintian", "ubuntu2404"), ("rpmlint", "debian12")],
    indirect=["distro"],
)
def test_linters_report_no_errors(linter: str, packages: Packages) -> None:
    if linter == "lintian":
        argv = ["lintian", "--fail-on", "error,warning", str(packages.deb)]
    else:
        argv = ["rpmlint", "-c", str(PACKAGING / "rpmlint.toml"), str(packages.rpm)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [line for line in done.stdout.splitlines() if ": E: " in line or line.startswith("E: ")]
