"""A booted Debian 12 for the system tier: systemd-nspawn with systemd as PID 1, journald, the
system bus, logind and polkit (see shared/FACTS.md, "A booted Debian system").

``Machine.boot`` starts a container on a root (``--ephemeral``: a throwaway copy, so tests never
share state; or the root itself, for reboots) and waits until its systemd is running. Commands
run inside with ``nsenter -t PID -a``, PID being the container's systemd (there is no machined
here, so no ``machinectl``). ``--private-network``: the container has its own loopback, so the
ports inside it never meet the host's.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

BOOT_TIMEOUT = 120.0  # seconds: a second here; a loaded 2-core CI machine can be far slower
_names = itertools.count()


class Machine:
    def __init__(self, nspawn: subprocess.Popen[bytes], pid1: int, name: str, console: Path) -> None:
        self.nspawn = nspawn
        self.pid1 = pid1
        self.name = name
        self.console = console

    @classmethod
    def boot(cls, root: Path, console: Path, *, ephemeral: bool = True, binds: Mapping[Path, str] = {}) -> Machine:
        name = f"va-{os.getpid()}-{next(_names)}"
        argv = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--private-network"]
        argv += ["-D", str(root), "-M", name, "--boot"]
        argv += ["--ephemeral"] if ephemeral else []
        argv += [f"--bind-ro={host}:{guest}" for host, guest in binds.items()]
        with console.open("ab") as out:
            nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        machine = None
        try:
            pid1 = _wait_for_pid1(nspawn, console)
            machine = cls(nspawn, pid1, name, console)
            machine.wait_running()
            return machine
        except BaseException:
            if machine is not None:
                machine.stop()
            else:
                nspawn.kill()
                nspawn.wait()
            raise

    def run(
        self,
        *argv: str,
        user: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside (as ``user`` through runuser, else root)."""
        command = ["runuser", "-u", user, "--", *argv] if user else list(argv)
        done = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            # The container's own environment, not the test runner's (no CI, no XDG_*).
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"in {self.name}: {shlex.join(command)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def sh(self, script: str, *, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-euc", script, check=check, timeout=timeout)

    def write(self, path: str, text: str) -> None:
        self.run("sh", "-c", f'mkdir -p "$(dirname {shlex.quote(path)})" && cat > {shlex.quote(path)}', input=text)

    def wait_running(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Until systemd finished booting; 'degraded' counts (a unit failed, not the boot)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.nspawn.poll() is not None:
                raise AssertionError(f"{self.name} exited while booting:\n{_tail(self.console)}")
            done = self.run("systemctl", "is-system-running", check=False, timeout=30)
            state = done.stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still {state!r} after {timeout}s:\n{_tail(self.console)}")
            time.sleep(0.2)

    def poweroff(self, timeout: float = 60.0) -> None:
        """Shut down as an operator would; nspawn exits once the container's systemd is done."""
        self.run("systemctl", "poweroff", check=False, timeout=30)
        try:
            self.nspawn.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.name} did not power off within {timeout}s") from None

    def stop(self) -> None:
        """Whatever state it is in: poweroff, then kill after a grace period."""
        if self.nspawn.poll() is not None:
            return
        subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "systemctl", "poweroff"], capture_output=True)
        try:
            self.nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.nspawn.send_signal(signal.SIGKILL)
            self.nspawn.wait()


class Booter:
    """``boot(root=None, ephemeral=True)``: a booted container on ``root`` (default: the
    cached one) with ``binds`` (host -> guest, read-only); ``stop_all()`` stops every container
    it booted."""

    def __init__(self, root: Path, binds: Mapping[Path, str], console: Path) -> None:
        self.root, self.binds, self.console = root, dict(binds), console
        self.booted: list[Machine] = []

    def __call__(self, root: Path | None = None, *, ephemeral: bool = True, binds: Mapping[Path, str] = {}) -> Machine:
        machine = Machine.boot(root or self.root, self.console, ephemeral=ephemeral, binds={**self.binds, **binds})
        self.booted.append(machine)
        return machine

    def stop_all(self) -> None:
        for machine in self.booted:
            machine.stop()


def _wait_for_pid1(nspawn: subprocess.Popen[bytes], console: Path) -> int:
    """The container's systemd: nspawn's child whose pid in its own namespace is 1."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {nspawn.returncode}:\n{_tail(console)}")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            nspid = fields.get("NSpid", "").split()
            if fields.get("PPid", "").strip() == str(nspawn.pid) and len(nspid) > 1 and nspid[-1] == "1":
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no systemd inside systemd-nspawn after {BOOT_TIMEOUT}s:\n{_tail(console)}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def which_missing(commands: Sequence[str]) -> list[str]:
    from shutil import which

    return [command for command in commands if which(command) is None]
