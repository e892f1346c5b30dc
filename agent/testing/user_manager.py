"""A private, real ``systemd --user`` manager for tests (see FACTS.md).

The manager runs in its own mount namespace, where a tmpfs over /run/systemd makes it believe
the system was booted with systemd; the host's /run/systemd is never touched. Clients outside
the namespace reach it through ``$RUNTIME/bus`` (``.env``); ``systemctl`` must run inside the
namespace (``.systemctl()``), because outside it only says "offline".

It also runs in its own cgroup. Without one, every user manager on the host takes the same
cgroup as its root, so units of the same name share one cgroup (/app.slice/dbus.service) and
stopping one kills the others' processes: two test sessions, or a test session and a manager
someone runs by hand, would kill each other's dbus-daemon and units.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SYSTEMD = Path("/usr/lib/systemd/systemd")
# Child processes of the test process that outlive single tests on purpose (the managers);
# the settle check in tests/conftest.py does not count them as leaks.
LONG_LIVED_CHILDREN: set[int] = set()
BOOT_TIMEOUT = 20.0
EXIT_TIMEOUT = 15.0
# The manager's own infrastructure: never reported as leftovers, never stopped by stop_all().
_INFRASTRUCTURE = ("dbus.service", "dbus.socket", "*.target", "*.slice", "init.scope")
# Inside the new mount namespace: a cgroup of its own, tmpfs over /run/systemd, then systemd.
_BOOT_SCRIPT = (
    'for cgroup in "$@"; do mkdir -p "$cgroup/init.scope" && echo $$ > "$cgroup/init.scope/cgroup.procs" || exit 1; '
    "done; mount -t tmpfs -o mode=755 tmpfs /run/systemd && mkdir /run/systemd/system && "
    # systemd fills a unit's credentials in a helper's own mount namespace and moves them to
    # $XDG_RUNTIME_DIR/credentials/UNIT, which needs shared propagation back to the manager: a
    # private namespace would leave the unit an empty $CREDENTIALS_DIRECTORY.
    'mount --bind "$XDG_RUNTIME_DIR" "$XDG_RUNTIME_DIR" && mount --make-shared "$XDG_RUNTIME_DIR" && '
    f"exec {SYSTEMD} --user"
)


def user_manager_available() -> str | None:
    """Why a private user manager cannot run here, or None when it can."""
    if not SYSTEMD.is_file():
        return f"{SYSTEMD} is missing: install the 'systemd' package"
    for tool in ("unshare", "nsenter", "systemctl", "mount"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not on PATH (util-linux / systemd)"
    if os.geteuid() != 0:
        return "a private user manager needs root (unshare --mount)"
    if not Path("/usr/lib/systemd/user/dbus.socket").exists():
        return "no user D-Bus: install the 'dbus-user-session' package"
    hierarchies = _process_tracking_hierarchies()
    if not hierarchies or not all(os.access(h, os.W_OK) for h in hierarchies):
        return f"cannot give the manager a cgroup of its own: {hierarchies or 'no cgroup hierarchy'} not writable"
    return None


class UserManagerError(RuntimeError):
    pass


class UserManager:
    """One private user manager. Start it with ``UserManager.boot()``; ``close()`` it."""

    def __init__(self, base_dir: Path, process: subprocess.Popen[bytes], log_path: Path, cgroups: list[Path]) -> None:
        self.base_dir = base_dir
        self.cgroups = cgroups
        self.runtime_dir = base_dir / "runtime"
        self.unit_dir = self.runtime_dir / "systemd" / "user"
        self.log_path = log_path
        self._process = process
        self.env = _client_env(base_dir)
        self._baseline: frozenset[str] = frozenset()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def config_unit_dir(self) -> Path:
        """The user's own unit directory ($XDG_CONFIG_HOME/systemd/user): it survives a reboot,
        where the runtime one (like /run) does not."""
        return self.base_dir / "config" / "systemd" / "user"

    @classmethod
    def boot(
        cls, parent: Path | None = None, *, timeout: float = BOOT_TIMEOUT, base_dir: Path | None = None
    ) -> UserManager:
        """Boot a manager; with ``base_dir`` (of one that lost power), boot again on its
        directories, with an empty runtime directory as after a reboot."""
        reason = user_manager_available()
        if reason:
            raise UserManagerError(reason)
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="vllm-agent-um-", dir=parent))
        shutil.rmtree(base_dir / "runtime", ignore_errors=True)
        (base_dir / "runtime").mkdir(mode=0o700)
        log_path = base_dir / "manager.log"
        cgroups = [hierarchy / base_dir.name for hierarchy in _process_tracking_hierarchies()]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", _BOOT_SCRIPT, "sh", *map(str, cgroups)],
                env=_client_env(base_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C in pytest must not reach the manager first
            )
        manager = cls(base_dir, process, log_path, cgroups)
        LONG_LIVED_CHILDREN.add(process.pid)
        try:
            manager._wait_until_running(timeout)
            manager.unit_dir.mkdir(parents=True, exist_ok=True)
            manager._baseline = frozenset(manager.active_units())
        except BaseException:
            manager.close()
            raise
        return manager

    def _wait_until_running(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = "no answer"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise UserManagerError(
                    f"systemd --user exited with status {self._process.returncode} while starting\n{self.log()}"
                )
            if (self.runtime_dir / "bus").exists():
                result = self.systemctl("is-system-running", check=False)
                state = result.stdout.strip() or result.stderr.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.05)
        raise UserManagerError(
            f"systemd --user (pid {self.pid}) was not running after {timeout:.0f} s (last state: {state})\n{self.log()}"
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``systemctl --user ARGS`` inside the manager's mount namespace."""
        command = ["nsenter", "-t", str(self.pid), "-m", "systemctl", "--user", *args]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise UserManagerError(
                f"systemctl --user {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def write_unit(self, name: str, text: str) -> Path:
        """Write a unit file into the runtime unit dir; call daemon_reload() before using it."""
        path = self.unit_dir / name
        path.write_text(text)
        return path

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        result = self.systemctl("show", unit, "-p", ",".join(properties))
        return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)

    def active_units(self) -> list[str]:
        """Loaded units that are active, activating or deactivating."""
        result = self.systemctl(
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "--full",
            "--state=active,activating,deactivating,reloading",
        )
        return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]

    def leftover_units(self) -> list[str]:
        """Units active now that were not active right after boot, infrastructure aside."""
        return [unit for unit in self.active_units() if unit not in self._baseline and not _is_infrastructure(unit)]

    def stop_all(self, pattern: str = "*") -> list[str]:
        """Stop every leftover unit (see leftover_units) matching ``pattern``; return them."""
        units = [unit for unit in self.leftover_units() if fnmatch.fnmatchcase(unit, pattern)]
        if units:
            self.systemctl("stop", *units)
            self.systemctl("reset-failed", *units, check=False)
        return units

    def power_loss(self) -> Path:
        """SIGKILL the manager and every process of its units at once, as a power cut would:
        no unit is stopped and nothing is told. Returns the base directory, which stays for
        ``UserManager.boot(base_dir=...)``."""
        deadline = time.monotonic() + EXIT_TIMEOUT
        while pids := self._cgroup_pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise UserManagerError(f"processes survived SIGKILL: {sorted(pids)}")
            time.sleep(0.05)
        self._process.wait(timeout=EXIT_TIMEOUT)
        LONG_LIVED_CHILDREN.discard(self.pid)
        for cgroup in self.cgroups:
            _remove_cgroup(cgroup)
        return self.base_dir

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for cgroup in self.cgroups:
            for directory, _subdirs, files in os.walk(cgroup):
                if "cgroup.procs" in files:
                    try:
                        pids.update(int(line) for line in Path(directory, "cgroup.procs").read_text().split())
                    except OSError:
                        continue  # removed meanwhile
        return pids

    def close(self) -> None:
        """Stop the units tests started, exit the manager, remove its directories."""
        try:
            if self._process.poll() is None:
                try:
                    # Everything, also what came up at boot (enabled units after a reboot):
                    # units still running when the manager exits are orphaned.
                    running = [unit for unit in self.active_units() if not _is_infrastructure(unit)]
                    if running:
                        self.systemctl("stop", *running, check=False)
                    self.systemctl("exit", check=False, timeout=EXIT_TIMEOUT)
                    self._process.wait(timeout=EXIT_TIMEOUT)
                except (subprocess.TimeoutExpired, UserManagerError):
                    self._process.kill()  # SIGTERM alone does not stop a user manager
                    self._process.wait(timeout=EXIT_TIMEOUT)
        finally:
            LONG_LIVED_CHILDREN.discard(self.pid)
            for pid in self._cgroup_pids():  # nothing of this manager may outlive it
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(self.base_dir, ignore_errors=True)
            for cgroup in self.cgroups:
                _remove_cgroup(cgroup)


def _process_tracking_hierarchies() -> list[Path]:
    """Mount points of the cgroup hierarchies systemd tracks processes in: the unified (v2)
    one and the legacy name=systemd one, whichever exist."""
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            fs_type, options = fields[fields.index("-") + 1], fields[-1].split(",")
            if fs_type == "cgroup2" or (fs_type == "cgroup" and "name=systemd" in options):
                found.append(Path(fields[4]))
    return found


def _remove_cgroup(cgroup: Path) -> None:
    """rmdir the tree bottom-up; cgroup directories go away with rmdir once empty."""
    if not cgroup.is_dir():
        return
    for directory, _subdirs, _files in sorted(os.walk(cgroup), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(directory)
        except OSError:
            pass  # still has processes: leave it rather than fail the session


def _is_infrastructure(unit: str) -> bool:
    return any(fnmatch.fnmatchcase(unit, pattern) for pattern in _INFRASTRUCTURE)


def _client_env(base_dir: Path) -> dict[str, str]:
    """Environment for the manager and its clients: its runtime dir, no session bus address,
    and private config/data homes so the host's ~/.config/systemd/user stays out of it."""
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env["XDG_RUNTIME_DIR"] = str(base_dir / "runtime")
    env["XDG_CONFIG_HOME"] = str(base_dir / "config")
    env["XDG_DATA_HOME"] = str(base_dir / "data")
    env["XDG_STATE_HOME"] = str(base_dir / "state")
    return env
