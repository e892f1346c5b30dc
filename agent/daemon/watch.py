"""Turn systemd's unit changes into deployment transitions: recorded, with a reason, and sent
to the agent_event hook so a plugin can alert."""

from __future__ import annotations

import time
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from ..config.names import name_from_unit
from ..deployments.state import StateStore
from ..deployments.status import unit_result_reason
from ..plugin_api import AgentEvent
from ..pluginhost.manager import Plugins
from ..systemd.model import UnitEvent, UnitState
from .history import History


@dataclass(frozen=True)
class Change:
    kind: str
    reason: str


def transitions(before: UnitState | None, after: UnitState, saved_reason: str, crash_loop: bool) -> list[Change]:
    """What an operator would call the difference between two looks at a unit."""
    if before is None:
        return []
    found: list[Change] = []
    last = saved_reason or unit_result_reason(after)
    if after.sub_state == "auto-restart" and before.sub_state != "auto-restart":
        # The moment systemd knows the run ended and schedules the restart: record it now, not
        # after RestartSec when the new start begins.
        found.append(Change("restarted", f"restart {after.n_restarts + 1}: {last}"))
    elif after.n_restarts > before.n_restarts and before.sub_state != "auto-restart":
        found.append(Change("restarted", f"restart {after.n_restarts}: {last}"))  # a missed auto-restart
    elif after.invocation_id and before.invocation_id and after.invocation_id != before.invocation_id:
        if before.active_state == "active" and after.active_state != "inactive":
            found.append(Change("restarted", f"new invocation: {last}"))
    if after.active_state != before.active_state:
        if after.active_state == "active":
            found.append(Change("ready", after.status_text))
        elif after.active_state == "activating" and before.active_state in ("inactive", "failed"):
            found.append(Change("starting", after.status_text or "starting"))
        elif after.active_state == "failed":
            found.append(Change("crash-loop" if crash_loop else "failed", last))
        elif after.active_state == "inactive":
            found.append(Change("stopped", "stopped"))
    if after.status_text.startswith("unhealthy") and not before.status_text.startswith("unhealthy"):
        found.append(Change("unhealthy", after.status_text))
    return found


class Watcher:
    def __init__(self, store: StateStore, history: History, plugins: Plugins, log: FilteringBoundLogger) -> None:
        self.store = store
        self.history = history
        self.plugins = plugins
        self.log = log
        self.units: dict[str, UnitState] = {}
        self.last_event_at: float = 0.0

    def attach(self, states: list[UnitState]) -> None:
        """Remember what is there now, without calling it a transition (a restarted daemon)."""
        for state in states:
            name = name_from_unit(state.name)
            if name:
                self.units[name] = state

    def handle(self, event: UnitEvent) -> list[Change]:
        name = name_from_unit(event.unit)
        if name is None or event.state is None:
            return []
        self.last_event_at = time.monotonic()
        before = self.units.get(name)
        self.units[name] = event.state
        saved = self.store.load(name)
        changes = transitions(before, event.state, saved.reason, saved.crash_loop)
        for change in changes:
            reason = change.reason + (" (noticed after reconnecting to systemd)" if event.kind == "resync" else "")
            self.history.record(name, change.kind, reason, event.state.n_restarts)
            self.log.info(
                "transition", deployment=name, kind=change.kind, reason=reason, restarts=event.state.n_restarts
            )
            try:
                self.plugins.emit(
                    AgentEvent(
                        deployment=name,
                        kind=change.kind,
                        reason=reason,  # type: ignore[arg-type]
                        timestamp=time.time(),
                        details={"restarts": event.state.n_restarts},
                    )
                )
            except Exception as err:  # an alerting plugin must not take the daemon down
                self.log.error("agent_event hook failed", error=repr(err))
        return changes
