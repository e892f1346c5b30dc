"""What the agent knows about systemd units, and the Protocol every unit manager implements.

No sdbus here: the real client (client.py) and the in-memory fake (tests/fakes) both build
these values, and the code above them sees nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..errors import InvalidUnitName

DEFAULT_PATTERNS: tuple[str, ...] = ("vllm@*.service",)

# ExecMainCode: how the main process ended (waitid's si_code).
CLD_EXITED = 1
CLD_KILLED = 2
CLD_DUMPED = 3

# Job results as systemd reports them in JobRemoved; "queued" when the caller did not wait.
JobResult = Literal["done", "failed", "canceled", "timeout", "dependency", "skipped", "queued"]

_UNIT_TYPES = "service|socket|target|device|mount|automount|swap|timer|path|slice|scope"
# What LoadUnit/StartUnit accept: a prefix, an optional non-empty @instance (a bare template
# such as "vllm@.service" cannot be loaded), a known type suffix.
_UNIT_NAME_RE = re.compile(rf"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\@-]+)?\.(?:{_UNIT_TYPES})")
UNIT_NAME_MAX = 255


def check_unit_name(unit: str) -> str:
    """Return ``unit`` if systemd would load a unit by that name, else raise InvalidUnitName."""
    if isinstance(unit, str) and len(unit) <= UNIT_NAME_MAX and _UNIT_NAME_RE.fullmatch(unit):
        return unit
    shown = repr(unit)[:80] if isinstance(unit, str) else type(unit).__name__
    raise InvalidUnitName(
        f"invalid unit name {shown}",
        hint="unit names are at most 255 characters of [A-Za-z0-9:_.\\@-] ending in a unit type "
        "such as '.service'; a template needs an instance: 'vllm@llama-3-8b.service'",
    )


@dataclass(frozen=True)
class UnitState:
    """One unit as systemd sees it now. Timestamps are microseconds since the epoch (0: never)."""

    name: str
    load_state: str  # "loaded", "not-found", "masked", "error", ...
    active_state: str  # "active", "inactive", "activating", "deactivating", "failed", ...
    sub_state: str  # "running", "dead", "auto-restart", "failed", ...
    result: str  # Service.Result ("success", "exit-code", "signal", ...); "" if not a service
    n_restarts: int  # automatic restarts since the last manual start
    main_pid: int  # 0 when no main process
    exec_main_status: int  # exit status, or the signal number when killed
    exec_main_code: int  # CLD_EXITED, CLD_KILLED, CLD_DUMPED; 0 when none yet
    invocation_id: str  # hex; "" when the unit has never run or was stopped
    status_text: str  # the service's STATUS= line
    active_enter_timestamp: int
    state_change_timestamp: int

    @property
    def exists(self) -> bool:
        return self.load_state != "not-found"

    @classmethod
    def not_found(cls, name: str) -> UnitState:
        """What systemd reports for a unit without a unit file."""
        return cls(
            name=name,
            load_state="not-found",
            active_state="inactive",
            sub_state="dead",
            result="success" if name.endswith(".service") else "",
            n_restarts=0,
            main_pid=0,
            exec_main_status=0,
            exec_main_code=0,
            invocation_id="",
            status_text="",
            active_enter_timestamp=0,
            state_change_timestamp=0,
        )


@dataclass(frozen=True)
class UnitEvent:
    """Something happened to a watched unit.

    ``changed``: its properties changed; ``state`` is its state when read, which may already be
    newer than the change. ``job``: a job on it finished with ``job_result``; ``state`` as read
    afterwards. ``resync``: the connection to systemd was lost and re-established, and events
    may have been missed; one per currently loaded matching unit with its ``state``.
    """

    kind: Literal["changed", "job", "resync"]
    unit: str
    state: UnitState | None
    job_result: str = ""


class UnitWatch(Protocol):
    """The async iterator watch() returns: it listens from the moment watch() returns, before
    the first ``__anext__``, so nothing done after watch() is missed. Close it with aclose()."""

    def __aiter__(self) -> UnitWatch: ...

    async def __anext__(self) -> UnitEvent: ...

    async def aclose(self) -> None: ...


class UnitManager(Protocol):
    """Drives systemd units. Errors are AgentError subclasses (SystemdError and friends)."""

    async def start(self, unit: str, *, wait: bool = True) -> str:
        """Start ``unit``; return the job result ("done", "failed", ...), or "queued" when not
        waiting. Waits as long as the job takes: systemd's own timeouts bound it."""
        ...

    async def stop(self, unit: str, *, wait: bool = True) -> str:
        """Stop ``unit``; "done" also when it was not loaded (nothing ran)."""
        ...

    async def restart(self, unit: str, *, wait: bool = True) -> str: ...

    async def reset_failed(self, unit: str) -> None:
        """Clear a failed state; no error when the unit is not failed or not loaded."""
        ...

    async def reload(self) -> None:
        """daemon-reload; returns when systemd has re-read its unit files."""
        ...

    async def get_state(self, unit: str) -> UnitState:
        """The unit's state, loading it if needed; load_state "not-found" for unknown units."""
        ...

    async def list_units(self, patterns: Sequence[str] = DEFAULT_PATTERNS) -> list[UnitState]:
        """Loaded units matching the glob patterns. systemd unloads inactive units nobody
        references, so inactive units may be missing: use get_state() for one unit."""
        ...

    def watch(self, patterns: Sequence[str] = DEFAULT_PATTERNS) -> UnitWatch:
        """Events for units matching the glob patterns, until closed. Reconnects by itself
        after a lost connection and then yields "resync" events."""
        ...

    async def close(self) -> None: ...
