"""The one lock for the config directory: port assignment and deployment-file writes (and,
later, device placement) happen under it, so two CLIs, or a CLI and the daemon, never decide
from the same stale view.

An flock on the directory itself: no lock file to create, and it works where the directory is
read-only to the caller. Re-entrant within a process, since flock locks belong to the open file
description and a second open of the same directory here would wait on ourselves.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import AgentError

WAIT = 30.0  # seconds: another vllm-agent holds it only for a few file writes

_held: dict[Path, int] = {}  # directory -> depth, for re-entrance within this process
_guard = threading.RLock()  # threads of one process share the flock: serialise them here


class ConfigLocked(AgentError):
    code = "config.locked"


@contextmanager
def config_lock(directory: Path, *, wait: float = WAIT) -> Iterator[None]:
    """Hold the config directory's lock; ConfigLocked after ``wait`` seconds."""
    key = directory.absolute()
    with _guard:
        if _held.get(key):
            _held[key] += 1
            try:
                yield
            finally:
                _held[key] -= 1
            return
        key.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _acquire(fd, key, wait)
            _held[key] = 1
            try:
                yield
            finally:
                del _held[key]
        finally:
            os.close(fd)  # closing the last descriptor releases the flock


def _acquire(fd: int, directory: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise ConfigLocked(
                    f"{directory} is locked by another vllm-agent for over {wait:g}s",
                    hint="another 'vllm-agent' command or the daemon is writing it; retry, or find it with "
                    f"'fuser {directory}'",
                ) from None
            time.sleep(0.02)
