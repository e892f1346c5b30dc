"""Make the units match the config directory: write changed drop-ins, reload systemd at most
once, start new deployments, restart stale ones, stop and clean removed ones.

Never a restart on top of systemd's own: failed and crash-looped deployments stay as they are
until an operator starts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from .configdir import Config
from .lifecycle import Deployments
from .names import NAME_RE, unit_name
from .render import DROPIN_NAME, hash_of


@dataclass
class Plan:
    reload: bool = False
    started: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(self, config: Config, deployments: Deployments, log: FilteringBoundLogger) -> None:
        self.config = config
        self.deployments = deployments
        self.units = deployments.units
        self.store = deployments.store
        self.log = log

    async def reconcile(self) -> Plan:
        plan = Plan()
        hashes: dict[str, str] = {}
        managed = [name for name, d in sorted(self.config.deployments.items()) if d.mode == "managed"]
        for name in managed:
            try:
                prepared = self.deployments.prepare(name)
            except Exception as err:  # one bad deployment must not stop the others
                self.log.error("cannot render", deployment=name, error=str(err))
                continue
            hashes[name] = prepared.rendered.hash
            plan.reload |= prepared.changed
        for name in self._orphans(set(managed)):
            await self.deployments.discard(name)
            plan.removed.append(name)
            plan.reload = True
        if plan.reload:
            await self.units.reload()
        for name, desired in hashes.items():
            unit = unit_name(name)
            state = await self.units.get_state(unit)
            saved = self.store.load(name)
            if not saved.wanted:
                continue
            if state.active_state == "inactive" and saved.phase in ("stopped", "") and not saved.crash_loop:
                await self.units.start(unit, wait=False)
                plan.started.append(name)
            elif state.active_state == "active" and saved.hash and saved.hash != desired:
                await self.units.restart(unit, wait=False)
                plan.restarted.append(name)
        if plan.started or plan.restarted or plan.removed:
            self.log.info("reconciled", started=plan.started, restarted=plan.restarted, removed=plan.removed)
        return plan

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
