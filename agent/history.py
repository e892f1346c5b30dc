"""Transitions of each deployment, kept on disk so a restarted daemon loses no history."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

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
        self._cache: dict[str, deque[Transition]] = {}

    def record(self, name: str, kind: str, reason: str, restarts: int) -> Transition:
        entry = Transition(at=time.time(), kind=kind, reason=reason, restarts=restarts)
        entries = self.load(name)
        entries.append(entry)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.jsonl"
        with path.open("a") as handle:
            handle.write(json.dumps(asdict(entry)) + "\n")
        if sum(1 for _ in path.open()) > 2 * KEEP:  # compact now and then, not on every write
            path.write_text("".join(json.dumps(asdict(item)) + "\n" for item in entries))
        return entry

    def load(self, name: str) -> deque[Transition]:
        if name not in self._cache:
            entries: deque[Transition] = deque(maxlen=KEEP)
            path = self.directory / f"{name}.jsonl"
            if path.exists():
                for line in path.read_text().splitlines():
                    try:
                        entries.append(Transition(**json.loads(line)))
                    except (ValueError, TypeError):
                        continue  # a torn last line after a crash
            self._cache[name] = entries
        return self._cache[name]

    def last(self, name: str, count: int = 10) -> list[Transition]:
        return list(self.load(name))[-count:]
