"""`vllm-agent run`: reconcile the config directory with the units and watch them.

Deployments heal themselves under systemd alone; the daemon adds reconciliation, history,
events, the status API and metrics. Killing it changes nothing for running deployments: on
start it attaches to what runs (no restarts) and carries on.

One slow part never stalls the rest: the watchdog is fed from a task of its own, a reconcile
after a reload runs beside the main loop, each external deployment is checked by a task of its
own at its own interval, and file I/O and GPU libraries run off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..aio import cancel_all
from ..config.directory import Config, load_config
from ..config.names import unit_name
from ..config.schema import Deployment
from ..deployments.lifecycle import Deployments
from ..deployments.state import DeploymentState, StateStore
from ..deployments.status import DeploymentStatus
from ..errors import AgentError
from ..gpu.failures import handle_fault, released, resume
from ..gpu.listing import TIMEOUT as GPU_TIMEOUT
from ..gpu.listing import GpuLister
from ..gpu.metrics import INTERVAL as GPU_INTERVAL
from ..gpu.metrics import GpuSampler
from ..gpu.quarantine import QuarantineStore
from ..gpu.watch import DeviceFault, GpuWatch
from ..log import get_logger
from ..pluginhost.manager import Plugins, make_plugin_manager
from ..systemd.model import UnitManager, UnitState
from ..unit.notify import Notifier
from .api import ApiServer, json_response
from .external import ExternalChecks
from .history import History
from .metrics import render_metrics
from .reconcile import Reconciler
from .watch import Watcher

TICK = 5.0  # seconds between status lines, health-file reads and retries of refused writes
HEARTBEAT = 15.0  # seconds between blank lines on an idle event stream: a gone subscriber shows
RETRY = 30.0  # seconds before a reconcile that failed as a whole is tried again


class Daemon:
    def __init__(
        self,
        config_dir: Path,
        user: bool,
        units: UnitManager,
        *,
        notifier: Notifier | None = None,
        extra_plugins: Iterable[tuple[str, object]] = (),
        gpu_timeout: float = GPU_TIMEOUT,
        gpu_interval: float = GPU_INTERVAL,
    ) -> None:
        self.config_dir = config_dir
        self.user = user
        self.units = units
        self.notifier = notifier or Notifier()
        self.log = get_logger(component="daemon")
        self._extra_plugins = tuple(extra_plugins)
        problems: list[str] = []
        # A broken file must not keep the daemon (and every other deployment) down.
        self.config: Config = load_config(config_dir, user=user, problems=problems)
        for problem in problems:
            self.log.error("config problem; that deployment is left as it is", problem=problem)
        self.plugins: Plugins = make_plugin_manager(self.config.settings, extra=self._extra_plugins)
        for problem in self.plugins.problems():  # one line each; the other plugins run
            self.log.error("plugin skipped", problem=problem)
        self.store = StateStore(self.config.state_dir)
        self.history = History(self.config.state_dir)
        self.watcher = Watcher(self.store, self.history, self.plugins, self.log)
        self.gpus = GpuLister(gpu_timeout)
        # Device health: sampled in threads (agent/gpu/watch.py), faults acted on here in order.
        quarantined = QuarantineStore(self.config.state_dir).uuids
        self.sampler = GpuSampler(lambda: self.plugins.gpu_backends(), interval=gpu_interval, quarantined=quarantined)
        self.gpu_faults: asyncio.Queue[DeviceFault] = asyncio.Queue()
        self.gpu_watch = GpuWatch(self.sampler, self.gpu_faults.put_nowait, self.log)
        self.reload_requested = asyncio.Event()
        self.health_failures: Counter[str] = Counter()
        self._seen_checks: dict[str, float] = {}
        self.external = ExternalChecks(self.health_failures, self.log)
        self._reconciling: asyncio.Task[None] | None = None
        # Set and replaced whenever what /v1/events reports may have changed.
        self._change = asyncio.Event()
        self._stopping = False

    def deployments(self) -> Deployments:
        return Deployments(self.config, self.units, self.plugins)

    async def run(self, stop: asyncio.Event) -> int:
        api = ApiServer(
            self.config.socket,
            {
                ("GET", "/v1/status"): self._status_route,
                ("GET", "/metrics"): self._metrics_route,
                ("POST", "/v1/reload"): self._reload_route,
            },
            {("GET", "/v1/events"): self._events_route},
        )
        await api.claim()  # a second daemon stops here, before it touches a unit or the socket
        watchdog = asyncio.create_task(self._feed_watchdog(), name="watchdog")
        watch = self.units.watch()  # listening before anything changes
        events: asyncio.Task[None] | None = None
        faults: asyncio.Task[None] | None = None
        try:
            self.watcher.attach(await self.units.list_units())
            for name in self.config.deployments:
                state = await self.units.get_state(unit_name(name))
                self.watcher.units.setdefault(name, state)
            await self.external.restart(self.config, self.plugins)
            await api.start()
            self.notifier.ready(await self._summary())
            self.log.info("daemon ready", socket=str(self.config.socket), deployments=len(self.config.deployments))
            events = asyncio.create_task(self._consume(watch), name="unit-events")
            faults = asyncio.create_task(self._gpu_faults(), name="gpu-faults")
            self.gpu_watch.start(self.plugins.gpu_backends())
            # Beside the loop: stopping a removed deployment can take its whole stop timeout.
            self._reconciling = asyncio.create_task(self._reconcile(), name="reconcile")
            await self._loop(stop, events)
        finally:
            self._stopping = True
            self.changed()  # event streams end
            await asyncio.to_thread(self.gpu_watch.stop)
            await cancel_all([events, faults, self._reconciling])
            await self.external.stop()
            await watch.aclose()
            await api.close()
            await cancel_all([watchdog])
        self.notifier.stopping("stopping")
        return 0

    async def _loop(self, stop: asyncio.Event, events: asyncio.Task[None]) -> None:
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            while not stop.is_set():
                waits: set[asyncio.Future[Any]] = {stopping, events}
                if self._reconciling is not None:
                    waits.add(self._reconciling)  # a reload meanwhile waits until it is done
                else:
                    waits.add(asyncio.create_task(self.reload_requested.wait(), name="reload-wait"))
                _, pending = await asyncio.wait(waits, timeout=TICK, return_when=asyncio.FIRST_COMPLETED)
                await cancel_all(pending - {stopping, events, self._reconciling})
                if events.done():
                    events.result()  # the watch ended: surface why
                if self._reconciling is not None and self._reconciling.done():
                    if not self._reconciling.cancelled() and self._reconciling.exception() is not None:
                        # systemd unreachable, say: try the whole pass again a little later.
                        self.log.error(
                            "reconcile failed; retrying", error=repr(self._reconciling.exception()), after=RETRY
                        )
                        asyncio.get_running_loop().call_later(RETRY, self.reload_requested.set)
                    self._reconciling = None
                if self.reload_requested.is_set() and self._reconciling is None:
                    self.reload_requested.clear()
                    self._reconciling = asyncio.create_task(self._reload(), name="reload")
                if not stop.is_set():
                    await self._tick()
        finally:
            await cancel_all([stopping])

    async def _feed_watchdog(self) -> None:
        """WATCHDOG=1 at a quarter of WatchdogSec, whatever else the daemon is waiting for.
        Only a stalled event loop (which nothing here may cause) lets systemd restart us."""
        usec = self.notifier.watchdog_usec
        if not usec:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(usec / 4e6)

    async def _tick(self) -> None:
        self._count_failed_checks(await asyncio.to_thread(self._health_files))
        await asyncio.to_thread(self.store.flush)  # what a full disk refused, once it takes it
        self.history.flush()  # the loop's own object; a no-op unless a write failed
        self.changed()  # phases the launchers wrote, external checks: streams send what moved
        await self._resume_released()
        self.notifier.status(await self._summary())

    async def _consume(self, watch) -> None:  # noqa: ANN001 - UnitWatch
        async for event in watch:
            self.watcher.handle(event)
            self.changed()

    async def _reconcile(self) -> None:
        await Reconciler(self.config, await self._listed_deployments(), self.log).reconcile()

    async def _listed_deployments(self) -> Deployments:
        """Deployments whose placement reads a GPU listing taken off the loop (a count or named
        devices alike), so that no vendor library runs on the event loop."""
        plugins = self.plugins
        if any(d.gpus for d in self.config.deployments.values() if d.mode == "managed"):
            plugins = await self.gpus.listed(plugins)  # type: ignore[assignment]
        return Deployments(self.config, self.units, plugins)

    async def _reload(self) -> None:
        """Re-read the config (SIGHUP, `vllm-agent reload`); a broken file changes nothing."""
        problems: list[str] = []
        try:
            config = await asyncio.to_thread(load_config, self.config_dir, user=self.user, problems=problems)
        except AgentError as err:
            self.log.error("reload refused", error=err.message)
            return
        for problem in problems:
            self.log.error("config problem; that deployment is left as it is", problem=problem)
        self.config = config
        self.plugins = make_plugin_manager(config.settings, extra=self._extra_plugins)
        for problem in self.plugins.problems():
            self.log.error("plugin skipped", problem=problem)
        self.watcher.plugins = self.plugins
        await asyncio.to_thread(self.gpu_watch.stop)  # the new plugins' backends are watched now
        self.gpu_watch.start(self.plugins.gpu_backends())
        self.log.info("config reloaded", deployments=len(config.deployments))
        self.changed()
        await self.external.restart(config, self.plugins)
        await self._reconcile()

    # GPU faults ----------------------------------------------------------------------------

    async def _gpu_faults(self) -> None:
        """One fault at a time, in the order the watches found them."""
        while True:
            fault = await self.gpu_faults.get()
            try:
                await handle_fault(fault, await self._listed_deployments(), self.plugins.emit, self.log)
            except Exception:  # a bug or a refused write: the next fault must still be handled
                self.log.exception("handling a GPU fault failed", gpu=fault.uuid, reason=fault.reason)

    async def _resume_released(self) -> None:
        """Start what a device fault stopped, once its device is released."""
        deployments = self.deployments()
        names = await asyncio.to_thread(released, deployments)
        if names:
            deployments = await self._listed_deployments()
        for name in names:
            await resume(name, deployments, self.log)

    # Health --------------------------------------------------------------------------------

    def _health_files(self) -> dict[str, list[dict[str, Any]]]:
        """The checks the units' launchers ran (they write each round). In a thread."""
        return {name: self.store.load(name).health for name in list(self.config.deployments)}

    def _count_failed_checks(self, health: dict[str, list[dict[str, Any]]]) -> None:
        for name, records in health.items():
            for record in records:
                at = float(record.get("at", 0.0))
                key = f"{name}/{record.get('name')}"
                if at > self._seen_checks.get(key, 0.0):
                    self._seen_checks[key] = at
                    if not record.get("ok", True):
                        self.health_failures[name] += 1

    # API -----------------------------------------------------------------------------------

    async def statuses(self) -> list[dict[str, Any]]:
        deployments = self.deployments()
        units = {
            name: await self._unit_state(deployment)
            for name, deployment in self.config.deployments.items()
            if deployment.mode != "external"
        }
        transitions = {name: [asdict(t) for t in self.history.last(name)] for name in self.config.deployments}
        return await asyncio.to_thread(self._rows, deployments, units, transitions)

    def _rows(
        self, deployments: Deployments, units: dict[str, UnitState], transitions: dict[str, list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """The status rows, from files: in a thread."""
        rows = []
        placed = deployments.placer.records.all()  # one read for every deployment
        for name, deployment in sorted(deployments.config.deployments.items()):
            saved = self.store.load(name)
            if deployment.mode == "external":
                row = self._external_row(deployment)
            else:
                row = deployments.status_of(deployment, units[name], saved=saved, placed=placed).as_json()
                row |= {"mode": deployment.mode, "health": saved.health}
            row["tests"] = saved.tests
            row["transitions"] = transitions.get(name, [])
            row["health_failures"] = self.health_failures[name]
            rows.append(row)
        return rows

    def _external_row(self, deployment: Deployment) -> dict[str, Any]:
        external = self.external.results.get(deployment.name, {})
        state = "ready" if external.get("ok") else ("unhealthy" if external else "starting")
        return {
            "name": deployment.name,
            "state": state,
            "model": deployment.model,
            "url": deployment.url or "",
            "port": deployment.port,
            "pid": 0,
            "restarts": 0,
            "gpus": [],
            "reason": "" if external.get("ok") else external.get("detail", ""),
            "mode": "external",
            "health": external.get("records", []),
        }

    async def _unit_state(self, deployment: Deployment) -> UnitState:
        """The watched state (signals keep it fresh); systemd is asked only for an unseen unit."""
        return self.watcher.units.get(deployment.name) or await self.units.get_state(unit_name(deployment.name))

    async def _status_route(self) -> tuple[int, str, bytes]:
        return json_response({"deployments": await self.statuses(), "daemon": {"pid": os.getpid()}})

    async def _metrics_route(self) -> tuple[int, str, bytes]:
        deployments = self.deployments()
        managed = {name: d for name, d in sorted(self.config.deployments.items()) if d.mode != "external"}
        units = {name: await self._unit_state(d) for name, d in managed.items()}

        def rows() -> list[tuple[DeploymentStatus, DeploymentState, int]]:
            placed = deployments.placer.records.all()
            found = []
            for name, d in managed.items():
                saved = self.store.load(name)
                status = deployments.status_of(d, units[name], saved=saved, placed=placed)
                found.append((status, saved, self.health_failures[name]))
            return found

        text = render_metrics(await asyncio.to_thread(rows))
        text += await asyncio.to_thread(self.sampler.metrics, refresh=False)  # the health thread samples
        return 200, "text/plain; version=0.0.4", text.encode()

    def changed(self) -> None:
        """Wake every event stream: each sends its rows if they differ from what it sent last."""
        self._change.set()
        self._change = asyncio.Event()

    async def _events_route(self, writer: asyncio.StreamWriter) -> None:
        """GET /v1/events: the gateway's rows now, then again each time they change (pushed, so the
        gateway never polls); a blank line every HEARTBEAT seconds when nothing changes."""
        from ..gateway.view import gateway_rows

        last = None
        while not self._stopping:
            change = self._change
            rows = gateway_rows(self.config.deployments, await self.statuses())
            if rows != last:
                writer.write(json.dumps({"deployments": rows}).encode() + b"\n")
                last = rows
            else:
                writer.write(b"\n")
            await writer.drain()
            try:
                await asyncio.wait_for(change.wait(), HEARTBEAT)
            except TimeoutError:
                pass

    async def _reload_route(self) -> tuple[int, str, bytes]:
        self.reload_requested.set()
        return json_response({"reload": "queued"})

    async def _summary(self) -> str:
        counts = Counter(row["state"] for row in await self.statuses())
        parts = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
        return f"{len(self.config.deployments)} deployment(s)" + (f": {parts}" if parts else "")


async def run_daemon(config_dir: Path, user: bool, units: UnitManager) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    daemon = Daemon(config_dir, user, units)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload_requested.set)
    try:
        return await daemon.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
