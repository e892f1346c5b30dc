"""A tiny tmpfs to run out of space on, and a read-only remount: real ENOSPC and EROFS.

Mounting needs root. ``prefix`` runs mount/umount elsewhere, e.g. inside the user manager's
mount namespace (``["nsenter", "-t", PID, "-m"]``), where units see the mount.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

FILLER = ".filler"
_FILL = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
try:
    while True:
        os.write(fd, b"x" * 4096)
except OSError:
    pass
"""


def tmpfs_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "'mount' is not on PATH (util-linux)"
    return None


class TinyTmpfs:
    def __init__(self, path: Path, size: str = "64k", prefix: Sequence[str] = ()) -> None:
        self.path = path
        self.size = size
        self.prefix = list(prefix)

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *command], capture_output=True, text=True, timeout=30, check=False)

    def mount(self) -> str | None:
        """Mount it; the reason when that is impossible here."""
        self.path.mkdir(parents=True, exist_ok=True)
        done = self._run("mount", "-t", "tmpfs", "-o", f"size={self.size},mode=755", "tmpfs", str(self.path))
        return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"

    def unmount(self) -> None:
        self._run("umount", "-l", str(self.path))

    def remount(self, *, read_only: bool) -> None:
        done = self._run("mount", "-o", f"remount,{'ro' if read_only else 'rw'}", str(self.path))
        assert done.returncode == 0, done.stderr

    def fill(self) -> None:
        """Write a filler file until the disk is full."""
        done = self._run("python3", "-c", _FILL, str(self.path / FILLER))
        assert done.returncode == 0, done.stderr

    def free(self) -> None:
        self._run("rm", "-f", str(self.path / FILLER))
