"""Deploy, start, stop, restart, remove: the operator's verbs, over a UnitManager."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config.deployfile import assign_port, ports_on_disk
from ..config.desired import RUNNING, STOPPED, DesiredStates
from ..config.directory import Config
from ..config.names import unit_name
from ..config.ports import allocate_port
from ..config.schema import Deployment
from ..errors import StartFailed
from ..fsutil import remove_if_exists, write_atomic
from ..gpu.devnodes import device_allow, sandboxed
from ..gpu.placement import Placer
from ..gpu.slots import Slot
from ..pluginhost.manager import Plugins
from ..render.dropin import Rendered, dropin_path, hash_of, render
from ..systemd.model import UnitManager, UnitState
from .state import DeploymentState, StateStore
from .status import DeploymentStatus, read_status

Progress = Callable[[str], None]
POLL = 0.25


@dataclass(frozen=True)
class Prepared:
    deployment: Deployment
    rendered: Rendered
    changed: bool


class Deployments:
    def __init__(
        self, config: Config, units: UnitManager, plugins: Plugins, *, command: list[str] | None = None
    ) -> None:
        self.config = config
        self.units = units
        self.plugins = plugins
        self.command = command
        self.store = StateStore(config.state_dir)
        self.desired = DesiredStates(config.state_dir, config.unit_dir, user=config.user)
        self.placer = Placer(config, plugins, desired=self.desired)

    # Rendering -------------------------------------------------------------------------------

    def render(self, name: str, *, write_port: bool = True) -> Rendered:
        """Render the drop-in; with ``write_port`` the port and the placement are recorded too
        (``vllm-agent render`` only shows what a start would write)."""
        deployment = self.config.deployment(name)
        if write_port:
            deployment = assign_port(self.config, deployment)
        elif deployment.port is None:  # the port a start would assign, from the files as they are
            taken = set(ports_on_disk(self.config, exclude=name))
            deployment = dataclasses.replace(deployment, port=allocate_port(self.config.settings.port_range, taken))
        # GpuError: no backend, too few free devices, a named device missing or over-shared.
        slots = self.placer.place(deployment, record=write_port)
        directives = self.plugins.unit_directives(deployment)
        return render(
            self.config,
            deployment,
            command=self.command,
            visible_devices=None if slots is None else [slot.uuid for slot in slots],
            gpu_vendor=slots[0].vendor if slots else "nvidia",
            device_allow=device_allow(slots) if slots and sandboxed(directives) else (),
            directives=directives,
        )

    def prepare(self, name: str) -> Prepared:
        """Render and write the drop-in if it changed; the caller reloads systemd once."""
        rendered = self.render(name)
        if self.config.settings.log_dir is not None:
            # systemd's StandardOutput=append: does not create the directory.
            self.config.settings.log_dir.mkdir(parents=True, exist_ok=True)
        path = dropin_path(self.config, name)
        current = path.read_text() if path.exists() else None
        # The hash covers what the deployment decides, not where this vllm-agent is installed:
        # a CLI and a daemon from two installs must not keep rewriting (and restarting) it.
        changed = current is None or hash_of(current) != rendered.hash
        if changed:
            write_atomic(path, rendered.text)
        return Prepared(self.config.deployments[name], rendered, changed=changed)

    # Verbs -----------------------------------------------------------------------------------

    async def start(
        self, name: str, *, wait: bool = True, timeout: float | None = None, progress: Progress = lambda _: None
    ) -> DeploymentStatus:
        prepared, state = await self._prepare_to_run(name)
        if state.active_state == "active":
            if self.store.load(name).hash == prepared.rendered.hash:
                return self.status_of(prepared.deployment, state)
            return await self._run_job(name, self.units.restart, wait, timeout, progress)
        return await self._run_job(name, self.units.start, wait, timeout, progress)

    async def restart(
        self, name: str, *, wait: bool = True, timeout: float | None = None, progress: Progress = lambda _: None
    ) -> DeploymentStatus:
        await self._prepare_to_run(name)
        return await self._run_job(name, self.units.restart, wait, timeout, progress)

    async def _prepare_to_run(self, name: str) -> tuple[Prepared, UnitState]:
        """Render (reloading systemd if the drop-in changed), forget old failures, clear a failed unit."""
        prepared = self.prepare(name)
        self.desired.set(name, RUNNING)
        if prepared.changed:
            await self.units.reload()
        # A manual start is the operator's word that the cause is fixed: forget old failures.
        self.store.update(name, startup_failures=0, failing_since=0.0, crash_loop=False)
        unit = unit_name(name)
        state = await self.units.get_state(unit)
        if state.active_state == "failed":
            await self.units.reset_failed(unit)
        return prepared, state

    async def stop(self, name: str) -> DeploymentStatus:
        unit = unit_name(name)
        self.desired.set(name, STOPPED)  # first: a reconcile meanwhile must not start it again
        await self.units.stop(unit)
        await self.units.reset_failed(unit)
        self.store.update(name, phase="stopped", reason="", hint="")
        return await self.status(name)

    async def remove(self, name: str) -> list[Path]:
        """Stop the unit, then remove its drop-in, its file and its state. Returns what went."""
        removed = await self.discard(name)
        if remove_if_exists(self.config.deployment_file(name)):
            removed.append(self.config.deployment_file(name))
        await self.units.reload()
        return removed

    async def discard(self, name: str) -> list[Path]:
        """Stop the unit and remove what the agent wrote for it (drop-in, state), not its file.
        The caller reloads systemd, once per batch."""
        unit = unit_name(name)
        self.desired.forget(name)
        await self.units.stop(unit)
        await self.units.reset_failed(unit)
        dropin = dropin_path(self.config, name)
        removed = [path for path in (dropin, self.store.path(name)) if remove_if_exists(path)]
        self.placer.forget(name)  # its devices are free for others
        try:
            dropin.parent.rmdir()
        except OSError:
            pass  # an operator's own drop-ins stay
        return removed

    async def status(self, name: str) -> DeploymentStatus:
        deployment = self.config.deployment(name)
        return self.status_of(deployment, await self.units.get_state(unit_name(name)))

    def status_of(
        self,
        deployment: Deployment,
        unit: UnitState,
        *,
        saved: DeploymentState | None = None,
        placed: Mapping[str, list[Slot]] | None = None,
    ) -> DeploymentStatus:
        """``saved`` and ``placed`` (every deployment's devices): read once by a caller that
        asks for many deployments, else read here."""
        saved = saved if saved is not None else self.store.load(deployment.name)
        if placed is None and deployment.gpus:
            placed = self.placer.records.all()
        return read_status(self.config, deployment, unit, saved, self.desired.get(deployment.name), placed or {})

    # Waiting ---------------------------------------------------------------------------------

    async def _run_job(
        self, name: str, verb: Callable, wait: bool, timeout: float | None, progress: Progress
    ) -> DeploymentStatus:
        unit = unit_name(name)
        deployment = self.config.deployments[name]
        if not wait:
            await verb(unit, wait=False)
            return await self.status(name)
        budget = timeout if timeout is not None else deployment.startup.timeout + 60
        deadline = time.monotonic() + budget
        job = asyncio.create_task(verb(unit))
        watcher = asyncio.create_task(self._report(unit, progress))
        try:
            result = await asyncio.wait_for(asyncio.shield(job), budget)
            # With Restart= set, a failed first job can be followed by systemd's own retry:
            # wait until the unit is ready or failed for good, not for one job.
            settled: tuple[str, int] | None = None
            while True:
                state = await self.units.get_state(unit)
                status = self.status_of(deployment, state)
                if state.active_state == "active":
                    break
                if state.active_state in ("failed", "inactive"):
                    # systemd passes through "failed" on its way to auto-restart: believe it
                    # only once it held for longer than the restart delay.
                    seen = (state.active_state, state.n_restarts)
                    if settled == seen:
                        break
                    settled = seen
                    await asyncio.sleep(deployment.restart.min_delay + 0.5)
                    continue
                settled = None
                if time.monotonic() > deadline:
                    raise TimeoutError
                await asyncio.sleep(POLL)
        except TimeoutError:
            job.cancel()
            raise StartFailed(
                f"{name} is not ready after {budget:g}s; systemd keeps trying",
                hint=f"watch it with 'vllm-agent status {name}' and 'vllm-agent logs {name}'",
            ) from None
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if status.state == "ready":
            return status
        raise StartFailed(
            f"{name} failed to start: {status.reason or result}",
            hint=status.hint or f"see 'vllm-agent logs {name}'",
        )

    async def _report(self, unit: str, progress: Progress) -> None:
        last = ""
        while True:
            state = await self.units.get_state(unit)
            text = state.status_text
            if state.sub_state == "auto-restart":
                text = f"restarting ({state.n_restarts} so far): {text}"
            if text and text != last:
                last = text
                progress(text)
            await asyncio.sleep(POLL)
