"""The fake-only ``--fake-mode`` faults: their names, and when the timed ones of a ready engine strike.

Each mode copies a way real vLLM fails (the package docstring has the measurements): a
``hang-after`` engine is wedged mid-step like a stuck EngineCore, ``engine-death-after`` kills the
EngineCore as an OOM kill would, ``crash-after`` kills the API server itself. The modes that shape
start-up, stop and requests act where that happens (api_server.py, loading.py, server.py).
"""

from __future__ import annotations

from collections.abc import Callable

from .logs import vlog

MODE_NAMES = {
    "ok": None,
    "exit-at-start": None,
    "port-in-use": None,
    "engine-death-after": float,
    "hang-after": float,
    "crash-after-requests": int,
    "crash-after": float,
    "slow-health": float,
    "ignore-sigterm": None,
    "cr-progress": float,
    "quiet-load": None,
    "long-line": int,
}


class ModeError(ValueError):
    """A ``--fake-mode`` value that names no mode or carries a bad number."""


def parse_modes(text: str) -> dict[str, float | int | None]:
    """``"hang-after:2,slow-health:0.5"`` -> ``{"hang-after": 2.0, "slow-health": 0.5}``."""
    modes: dict[str, float | int | None] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, raw = item.partition(":")
        if name not in MODE_NAMES:
            raise ModeError(f"unknown --fake-mode {item!r}; known: {', '.join(MODE_NAMES)}")
        kind = MODE_NAMES[name]
        if kind is None:
            if sep:
                raise ModeError(f"--fake-mode {name} takes no value")
            modes[name] = None
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise ModeError(f"--fake-mode {name}:N needs a number, got {raw!r}") from None
        if value < 0:
            raise ModeError(f"--fake-mode {name}:N must not be negative")
        modes[name] = value
    modes.pop("ok", None)
    return modes


class ReadyFaults:
    """The timed modes of a ready engine, checked by the API server's watch loop each tick with
    the seconds since it became ready."""

    def __init__(self, modes: dict, crash: Callable[[str], None]):
        self.hang_at = modes.get("hang-after")
        self.death_at = modes.get("engine-death-after")
        self.crash_at = modes.get("crash-after")
        self._crash = crash

    def strike(self, since: float, engine) -> None:
        """``crash-after:N`` kills the API server; ``hang-after:N`` wedges ``engine`` for good."""
        if self.crash_at is not None and since >= self.crash_at:
            self._crash(f"crash-after:{self.crash_at}")
        if self.hang_at is not None and since >= self.hang_at and engine.get_state() == "ready":
            vlog("WARNING", "core.py:400", "EngineCore stopped making progress (fake hang)")
            engine.set_state("hung")

    def before_listening(self, engine) -> None:
        """``hang-after:0`` is wedged before the socket listens: no request may slip in first
        (the watch loop's first tick is 50 ms after ready)."""
        if self.hang_at == 0:
            self.strike(0.0, engine)

    def engine_death_due(self, since: float) -> bool:
        """``engine-death-after:N``: time to SIGKILL the EngineCore."""
        return self.death_at is not None and since >= self.death_at
