"""Transitions of each deployment, kept on disk so a restarted daemon loses no history.

The daemon is the only writer. A write the disk refuses is kept in memory and the whole file is
rewritten (atomically) on the next record or ``flush()``; a damaged file is moved aside and
rebuilt from the entries that could still be read.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from ..fsutil import write_atomic
from ..jsonfiles import Damaged, Trouble, decode, move_aside, read_bytes

KEEP = 200  # transitions kept per deployment


@dataclass(frozen=True)
class Transition:
    at: float  # epoch seconds
    kind: str  # starting, ready, unhealthy, restarted, failed, crash-loop, stopped
    reason: str
    restarts: int


class History:
    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "history"
        self.trouble = Trouble("history")
        self._cache: dict[str, deque[Transition]] = {}
        self._lines: dict[str, int] = {}  # lines in the file, to compact now and then
        self._behind: set[str] = set()  # the file lacks entries (or ends torn): rewrite it whole

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.jsonl"

    def record(self, name: str, kind: str, reason: str, restarts: int) -> Transition:
        entry = Transition(at=time.time(), kind=kind, reason=reason, restarts=restarts)
        self.load(name).append(entry)
        if name in self._behind or self._lines[name] >= 2 * KEEP:  # compact now and then
            self._rewrite(name)
        else:
            self._append(name, entry)
        return entry

    def flush(self) -> bool:
        """Retry what the disk refused; True when every file holds what memory holds."""
        for name in sorted(self._behind):
            self._rewrite(name)
        return not self._behind

    def load(self, name: str) -> deque[Transition]:
        if name not in self._cache:
            self._cache[name], damaged = self._read(name)
            if damaged:
                self._rewrite(name)  # rebuilt from the entries that could be read
        return self._cache[name]

    def last(self, name: str, count: int = 10) -> list[Transition]:
        return list(self.load(name))[-count:]

    # Inside -----------------------------------------------------------------------------------

    def _append(self, name: str, entry: Transition) -> None:
        path = self.path(name)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(asdict(entry)) + "\n")
        except OSError as err:
            self._behind.add(name)  # a part of the line may have reached the file
            self.trouble.write_failed(path, err, keeping=f"transitions of {name}")
            return
        self._lines[name] += 1
        self.trouble.writes_work(path)

    def _rewrite(self, name: str) -> None:
        path = self.path(name)
        entries = self.load(name)
        try:
            write_atomic(path, "".join(json.dumps(asdict(item)) + "\n" for item in entries))
        except OSError as err:
            self._behind.add(name)
            self.trouble.write_failed(path, err, keeping=f"transitions of {name}")
            return
        self._behind.discard(name)
        self._lines[name] = len(entries)
        self.trouble.writes_work(path)

    def _read(self, name: str) -> tuple[deque[Transition], bool]:
        entries: deque[Transition] = deque(maxlen=KEEP)
        path = self.path(name)
        self._lines[name] = 0
        try:
            found = read_bytes(path)
        except OSError as err:
            self.trouble.report(("read", str(path), err.errno), "cannot read a history file", file=str(path))
            self._behind.add(name)
            return entries, False
        if found is None:
            return entries, False
        raw, read = found
        lines = raw.split(b"\n")
        if lines[-1]:
            self._behind.add(name)  # a torn last line after a crash: the next write replaces it
        problems = []
        for number, line in enumerate(lines[:-1], start=1):
            try:
                entries.append(decode(Transition, json.loads(line.decode("utf-8"))))
            except (UnicodeDecodeError, ValueError) as err:  # Damaged and JSONDecodeError too
                problems.append(f"line {number}: {err if isinstance(err, Damaged) else 'not JSON in UTF-8'}")
        self._lines[name] = len(lines) - 1
        if problems:
            move_aside(path, read, "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""), self.trouble)
        return entries, bool(problems)
