"""Make the units match the config directory and the desired state: write changed drop-ins,
reload systemd at most once, start what is wanted and not running, restart stale ones, stop and
clean removed ones.

It converges on the desired state (agent/config/desired.py), never on the phase a launcher last
recorded: after a power loss that phase still says "serving". Never a restart on top of
systemd's own: failed and crash-looped deployments stay as they are until an operator starts
them. One deployment's failure is that deployment's reason, never the end of the pass.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from ..config.desired import RUNNING
from ..config.directory import Config
from ..config.names import NAME_RE, unit_name
from ..deployments.lifecycle import Deployments
from ..errors import AgentError
from ..gpu.quarantine import held_on
from ..render.dropin import DROPIN_NAME, hash_of


@dataclass
class Plan:
    reload: bool = False
    started: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # deployment -> why it was left out


class Reconciler:
    def __init__(self, config: Config, deployments: Deployments, log: FilteringBoundLogger) -> None:
        self.config = config
        self.deployments = deployments
        self.units = deployments.units
        self.store = deployments.store
        self.desired = deployments.desired
        self.log = log

    async def reconcile(self) -> Plan:
        plan = Plan()
        hashes: dict[str, str] = {}
        managed = [name for name, d in sorted(self.config.deployments.items()) if d.mode == "managed"]
        for name in managed:
            if held_on(self.store.load(name)) is not None:
                continue  # a device fault stopped it (on_gpu_failure): left as is until the device is released
            try:
                # Rendering may ask GPU libraries and takes the config lock: off the event loop.
                prepared = await asyncio.to_thread(self.deployments.prepare, name)
                self.desired.sync_enablement(name)
            except Exception as err:  # one bad deployment must not stop the others
                self._refuse(plan, name, "cannot render its unit", err)
                continue
            hashes[name] = prepared.rendered.hash
            plan.reload |= prepared.changed
        for name in self._orphans(set(managed)):
            try:
                await self.deployments.discard(name)
            except AgentError as err:
                self._refuse(plan, name, "cannot remove it", err)
                continue
            plan.removed.append(name)
            plan.reload = True
        if plan.reload:
            await self.units.reload()
        for name, rendered_hash in hashes.items():
            try:
                await self._converge(plan, name, rendered_hash)
            except AgentError as err:
                self._refuse(plan, name, "systemd refused to start it", err)
        # Every pass says so, changes or not: an operator (and a test) can tell it ran.
        self.log.info(
            "reconciled",
            started=plan.started,
            restarted=plan.restarted,
            removed=plan.removed,
            refused=plan.refused,
            reloaded=plan.reload,
        )
        return plan

    async def _converge(self, plan: Plan, name: str, rendered_hash: str) -> None:
        if self.desired.get(name) != RUNNING:
            return
        unit = unit_name(name)
        state = await self.units.get_state(unit)
        saved = self.store.load(name)
        if state.active_state == "inactive" and not saved.crash_loop:
            await self.units.start(unit, wait=False)
            plan.started.append(name)
        elif state.active_state == "active" and saved.hash and saved.hash != rendered_hash:
            await self.units.restart(unit, wait=False)
            plan.restarted.append(name)

    def _refuse(self, plan: Plan, name: str, what: str, err: Exception) -> None:
        text = err.message if isinstance(err, AgentError) else f"{type(err).__name__}: {err}"
        hint = (err.hint if isinstance(err, AgentError) else None) or f"fix it, then 'vllm-agent start {name}'"
        reason = f"{what}: {text}"
        plan.refused[name] = reason
        self.log.error("deployment left out", deployment=name, reason=reason)
        try:
            self.store.update(name, phase="failed", reason=reason, hint=hint)
        except OSError:
            pass  # the state directory's own trouble is logged by the store

    def _orphans(self, wanted: set[str]) -> list[str]:
        """Deployments whose agent-written drop-in remains but whose file is gone."""
        found = []
        for dropin in sorted(self.config.unit_dir.glob(f"vllm@*.service.d/{DROPIN_NAME}")):
            name = dropin.parent.name.removeprefix("vllm@").removesuffix(".service.d")
            # A file that exists but does not validate is a typo to fix, not a removal.
            if self.config.deployment_file(name).exists():
                continue
            if NAME_RE.fullmatch(name) and name not in wanted and hash_of(dropin.read_text()):
                found.append(name)
        return found
