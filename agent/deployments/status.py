"""What a deployment is doing, in one word and one line: from systemd's view and the launcher's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..config.schema import Deployment
from ..render.dropin import written_hash
from ..systemd.model import UnitState
from ..urls import http_url
from . import statusline
from .state import DeploymentState

if TYPE_CHECKING:
    from ..config.directory import Config
    from ..gpu.slots import Slot

State = Literal["stopped", "starting", "ready", "unhealthy", "failed", "crash-loop"]


@dataclass(frozen=True)
class DeploymentStatus:
    name: str
    state: State
    model: str
    url: str
    port: int | None
    pid: int
    restarts: int
    reason: str
    hint: str = ""
    gpus: list[str] = field(default_factory=list)  # "0", "1", "0/mig3": as `status` prints them
    devices: list[dict[str, Any]] = field(default_factory=list)  # index, uuid, name of each
    phase: str = ""
    active_state: str = ""
    sub_state: str = ""
    stale: bool = False
    desired: str = "running"  # what the operator asked for: running or stopped
    revision: str = ""  # the commit the model resolved to at the last start, where known

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeploymentStatus:
        known = cls.__dataclass_fields__
        return cls(**{key: value for key, value in data.items() if key in known})


def read_status(
    config: Config,
    deployment: Deployment,
    unit: UnitState,
    saved: DeploymentState,
    desired: str,
    placed: Mapping[str, Sequence[Slot]],
) -> DeploymentStatus:
    """A deployment's status from systemd's ``unit`` and what is on disk: its drop-in's hash, the
    launcher's state (``saved``) and the placement record (``placed``: each deployment's devices)."""
    devices = placed.get(deployment.name) if deployment.gpus else None
    return classify(deployment, unit, saved, written_hash(config, deployment), desired, devices)


def classify(
    deployment: Deployment,
    unit: UnitState,
    saved: DeploymentState,
    rendered_hash: str = "",
    desired: str = "running",
    devices: Sequence[Slot] | None = None,
) -> DeploymentStatus:
    """``devices``: the placement record, when the deployment has one."""
    state, reason, hint = _state(deployment, unit, saved)
    if unit.active_state == "deactivating" and desired == "running":
        # A restart (or systemd's own, after a failure): wanted, on its way back. Clients of the
        # gateway get 503 with Retry-After meanwhile, not "nothing is starting".
        state, reason, hint = "starting", "restarting: the engine is stopping", ""
    elif state == "stopped" and desired == "running" and unit.active_state != "deactivating":
        reason, hint = _wanted_but_stopped(deployment.name, saved)
    running = unit.active_state in ("active", "activating", "reloading")
    return DeploymentStatus(
        name=deployment.name,
        state=state,
        model=deployment.model,
        url=http_url(deployment.host, deployment.port) if deployment.port else "",
        port=deployment.port,
        pid=unit.main_pid,
        restarts=unit.n_restarts,
        reason=reason,
        hint=hint,
        gpus=[slot.label for slot in devices] if devices else list(saved.visible_devices),
        devices=[{"index": s.index, "uuid": s.uuid, "name": s.name, "mig": s.mig} for s in devices or ()],
        phase=saved.phase,
        active_state=unit.active_state,
        sub_state=unit.sub_state,
        stale=bool(running and rendered_hash and saved.hash and saved.hash != rendered_hash),
        desired=desired,
        revision=saved.revision,
    )


# Phases a launcher records while it runs: one of these left behind means it never recorded
# its end, so the host (or the manager) went down under it.
_RUNNING_PHASES = ("resolving", "starting", "loading", "testing", "serving", "unhealthy")


def _wanted_but_stopped(name: str, saved: DeploymentState) -> tuple[str, str]:
    start = f"'vllm-agent start {name}' starts it; 'vllm-agent stop {name}' if it should stay stopped"
    if saved.phase in _RUNNING_PHASES:
        return f"wanted, not running since boot: it was {saved.phase} when its host went down", start
    if saved.phase == "failed":
        return f"wanted, not running: {saved.reason}", saved.hint or start
    if saved.started_at:
        return "wanted, not running: stopped outside vllm-agent (systemctl stop?)", start
    return "wanted, not started yet", start


def _state(deployment: Deployment, unit: UnitState, saved: DeploymentState) -> tuple[State, str, str]:
    name = deployment.name
    active = unit.active_state
    if active == "active":
        if saved.phase == "unhealthy":
            return "unhealthy", saved.reason, "systemd restarts it if the checks keep failing"
        return "ready", "", ""
    if active in ("activating", "reloading"):
        if unit.sub_state == "auto-restart":
            last = saved.reason or unit_result_reason(unit)
            return "starting", f"restarting after: {last}", ""
        return "starting", unit.status_text or "starting", ""
    if saved.crash_loop:
        return "crash-loop", saved.reason, f"fix the cause, then 'vllm-agent start {name}' resets it"
    if active == "failed":
        reason = saved.reason or unit.status_text.removeprefix("failed: ") or unit_result_reason(unit)
        hint = saved.hint or f"see 'vllm-agent logs {name}'"
        restart = deployment.restart
        # systemd 252 may leave Result=exit-code when the refused start was an automatic
        # restart; NRestarts past the budget tells the same story.
        if unit.result == "start-limit-hit" or unit.n_restarts > restart.max_restarts:
            reason = (
                f"start limit hit: {restart.max_restarts + 1} starts within {restart.window:g}s; last failure: {reason}"
            )
            hint = f"fix the cause, then 'vllm-agent start {name}' resets it"
        return "failed", reason, hint
    if active == "deactivating":
        return "stopped", "stopping", ""
    return "stopped", "", ""


def unit_result_reason(unit: UnitState) -> str:
    """systemd's own word for how the last run ended, as a sentence."""
    result = unit.result
    if result == "exit-code":
        return f"the launcher exited with status {unit.exec_main_status}"
    if result == "signal":
        return f"the launcher was killed by signal {unit.exec_main_status}"
    if result == "watchdog":
        return "the health checks failed (systemd watchdog)"
    if result == "timeout":
        return "systemd's start or stop timeout passed"
    if result == "start-limit-hit":
        return "systemd's start limit was hit"
    if result == "oom-kill":
        return "the kernel's OOM killer ended it"
    if result == "core-dump":
        return "it crashed with a core dump"
    return result or "unknown"


def one_line(status: DeploymentStatus) -> str:
    return statusline.one_line(status.as_json())
