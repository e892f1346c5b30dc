"""Per-deployment state written by the launcher: phase, reason and history across restarts.

Lives in the state directory (not a runtime directory) so it survives the unit's stop, and the
CLI and the daemon can say why a deployment failed after the fact.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .fsutil import write_atomic


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
    tests: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "deployments"

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str) -> DeploymentState:
        try:
            data = json.loads(self.path(name).read_text())
        except (FileNotFoundError, ValueError):
            return DeploymentState(name=name)
        known = DeploymentState.__dataclass_fields__
        return DeploymentState(**{key: value for key, value in data.items() if key in known})

    def save(self, state: DeploymentState) -> DeploymentState:
        write_atomic(self.path(state.name), json.dumps(asdict(state), indent=1) + "\n")
        return state

    def update(self, name: str, **changes: Any) -> DeploymentState:
        state = self.load(name)
        if "phase" in changes and changes["phase"] != state.phase:
            changes.setdefault("since", time.time())
        return self.save(replace(state, **changes))
