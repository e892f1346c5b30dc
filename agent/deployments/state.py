"""Per-deployment state written by the launcher: phase, reason and history across restarts.

Lives in the state directory (not a runtime directory) so it survives the unit's stop, and the
CLI and the daemon can say why a deployment failed after the fact.

Writing it must never take a serving engine or the daemon down: a write the disk refuses
(ENOSPC, EROFS) is kept in memory, where later loads in this process see it, and retried on the
next write or ``flush()``. A damaged file is moved aside and the state rebuilt from defaults.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..fsutil import write_atomic
from ..jsonfiles import Damaged, Trouble, decode, move_aside, read_bytes


@dataclass(frozen=True)
class DeploymentState:
    name: str
    phase: str = "stopped"  # resolving, starting, loading, testing, serving, unhealthy, failed, stopped
    reason: str = ""
    hint: str = ""
    hash: str = ""
    url: str = ""
    pid: int = 0
    invocation_id: str = ""
    since: float = 0.0  # when this phase began (epoch seconds)
    started_at: float = 0.0  # when this invocation began
    ready_at: float = 0.0  # when this invocation became ready, 0 if never
    startup_failures: int = 0  # consecutive starts that never became ready
    failing_since: float = 0.0  # when the first of those starts began (epoch seconds)
    crash_loop: bool = False
    visible_devices: list[str] = field(default_factory=list)
    revision: str = ""  # the commit the model source resolved to (hf: the snapshot's commit)
    tests: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)


class _Backlog:
    """Changes the disk refused, per deployment, shared by every store of one directory in
    this process (the daemon and the CLI make several)."""

    def __init__(self) -> None:
        self.pending: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()  # the pending dict; held only for a moment, loads take it
        self.writing = threading.RLock()  # one read-modify-write at a time; loads never wait on it
        self.trouble = Trouble("state")


_backlogs: dict[str, _Backlog] = {}
_backlogs_lock = threading.Lock()


def _backlog(directory: Path) -> _Backlog:
    with _backlogs_lock:
        return _backlogs.setdefault(os.path.abspath(directory), _Backlog())


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "deployments"
        self._backlog = _backlog(self.directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str) -> DeploymentState:
        state = self._read(name)
        with self._backlog.lock:
            pending = self._backlog.pending.get(name)
        return replace(state, **pending) if pending else state

    def update(self, name: str, **changes: Any) -> DeploymentState:
        with self._backlog.writing:
            state = self.load(name)
            if "phase" in changes and changes["phase"] != state.phase:
                changes.setdefault("since", time.time())
            return self._commit(replace(state, **changes), changes)

    def pending(self) -> list[str]:
        """Deployments whose latest state is only in memory."""
        with self._backlog.lock:
            return sorted(self._backlog.pending)

    def flush(self) -> bool:
        """Retry what the disk refused; True when nothing is left in memory only."""
        backlog = self._backlog
        with backlog.writing:
            for name in self.pending():
                if self._write(self.load(name)):
                    with backlog.lock:
                        backlog.pending.pop(name, None)
        return not self.pending()

    # Inside -----------------------------------------------------------------------------------

    def _commit(self, state: DeploymentState, changes: dict[str, Any]) -> DeploymentState:
        backlog = self._backlog
        written = self._write(state)
        with backlog.lock:
            if written:
                backlog.pending.pop(state.name, None)
            else:
                backlog.pending[state.name] = backlog.pending.get(state.name, {}) | changes
            behind = bool(backlog.pending)
        if written and behind:
            self.flush()  # the disk takes writes again: catch up the others too
        return state

    def _write(self, state: DeploymentState) -> bool:
        path = self.path(state.name)
        try:
            write_atomic(path, json.dumps(asdict(state), indent=1) + "\n")
        except OSError as err:
            self._backlog.trouble.write_failed(path, err, keeping=f"state of {state.name}")
            return False
        self._backlog.trouble.writes_work(path)
        return True

    def _read(self, name: str) -> DeploymentState:
        path = self.path(name)
        trouble = self._backlog.trouble
        try:
            found = read_bytes(path)
        except OSError as err:
            trouble.report(("read", str(path), err.errno), "cannot read a state file; using defaults", file=str(path))
            return DeploymentState(name=name)
        if found is None:
            return DeploymentState(name=name)
        raw, read = found
        try:
            return decode(DeploymentState, json.loads(raw.decode("utf-8")), overrides={"name": name})
        except (UnicodeDecodeError, ValueError) as err:  # Damaged and JSONDecodeError are ValueErrors
            problem = str(err) if isinstance(err, Damaged) else f"not valid JSON in UTF-8: {err}"
            move_aside(path, read, problem, trouble)
            return DeploymentState(name=name)
