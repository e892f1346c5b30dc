"""`vllm-agent run`: reconcile the config directory with the units and watch them.

Deployments heal themselves under systemd alone; the daemon adds reconciliation, history,
events, the status API and metrics. Killing it changes nothing for running deployments: on
start it attaches to what runs (no restarts) and carries on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .api import ApiServer, json_response
from .config import Deployment
from .configdir import Config, load_config
from .errors import AgentError
from .health import HealthMonitor
from .history import History
from .lifecycle import Deployments
from .log import get_logger
from .metrics import render_metrics
from .names import unit_name
from .notify import Notifier
from .plugin_api import EngineTarget
from .plugins import Plugins, make_plugin_manager
from .reconcile import Reconciler
from .state import StateStore
from .status import DeploymentStatus
from .systemd.model import UnitManager
from .watcher import Watcher

TICK = 5.0  # seconds between watchdog pings, status lines and health-file reads


class Daemon:
    def __init__(self, config_dir: Path, user: bool, units: UnitManager, *, notifier: Notifier | None = None) -> None:
        self.config_dir = config_dir
        self.user = user
        self.units = units
        self.notifier = notifier or Notifier()
        self.log = get_logger(component="daemon")
        problems: list[str] = []
        # A broken file must not keep the daemon (and every other deployment) down.
        self.config: Config = load_config(config_dir, user=user, problems=problems)
        for problem in problems:
            self.log.error("config problem; that deployment is left as it is", problem=problem)
        self.plugins: Plugins = make_plugin_manager(self.config.settings)
        self.store = StateStore(self.config.state_dir)
        self.history = History(self.config.state_dir)
        self.watcher = Watcher(self.store, self.history, self.plugins, self.log)
        self.reload_requested = asyncio.Event()
        self.health_failures: Counter[str] = Counter()
        self._seen_checks: dict[str, float] = {}
        self._external: dict[str, HealthMonitor] = {}
        self._external_results: dict[str, dict[str, Any]] = {}

    def deployments(self) -> Deployments:
        return Deployments(self.config, self.units, self.plugins)

    async def run(self, stop: asyncio.Event) -> int:
        watch = self.units.watch()  # listening before anything changes
        self.watcher.attach(await self.units.list_units())
        for name in self.config.deployments:
            state = await self.units.get_state(unit_name(name))
            self.watcher.units.setdefault(name, state)
        await self._reconcile()
        api = ApiServer(
            self.config.socket,
            {
                ("GET", "/v1/status"): self._status_route,
                ("GET", "/metrics"): self._metrics_route,
                ("POST", "/v1/reload"): self._reload_route,
            },
        )
        await api.start()
        self.notifier.ready(await self._summary())
        self.log.info("daemon ready", socket=str(self.config.socket), deployments=len(self.config.deployments))
        events = asyncio.create_task(self._consume(watch), name="unit-events")
        try:
            while not stop.is_set():
                waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(self.reload_requested.wait())}
                done, pending = await asyncio.wait(
                    waiters | {events}, timeout=TICK, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending - {events}:
                    task.cancel()
                await asyncio.gather(*(pending - {events}), return_exceptions=True)
                if events.done():
                    events.result()  # the watch ended: surface why
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    await self._reload()
                self.notifier.watchdog()
                self._read_health_files()
                await self._check_external()
                self.notifier.status(await self._summary())
        finally:
            events.cancel()
            await asyncio.gather(events, return_exceptions=True)
            await watch.aclose()
            await api.close()
            for monitor in self._external.values():
                await monitor.aclose()
        self.notifier.stopping("stopping")
        return 0

    async def _consume(self, watch) -> None:  # noqa: ANN001 - UnitWatch
        async for event in watch:
            self.watcher.handle(event)

    async def _reconcile(self) -> None:
        await Reconciler(self.config, self.deployments(), self.log).reconcile()

    async def _reload(self) -> None:
        """Re-read the config (SIGHUP, `vllm-agent reload`); a broken file changes nothing."""
        problems: list[str] = []
        try:
            config = load_config(self.config_dir, user=self.user, problems=problems)
        except AgentError as err:
            self.log.error("reload refused", error=err.message)
            return
        for problem in problems:
            self.log.error("config problem; that deployment is left as it is", problem=problem)
        self.config = config
        self.plugins = make_plugin_manager(config.settings)
        self.watcher.plugins = self.plugins
        self.log.info("config reloaded", deployments=len(config.deployments))
        await self._reconcile()

    # Health --------------------------------------------------------------------------------

    def _read_health_files(self) -> None:
        """Count failed checks the units' launchers ran (they write each round)."""
        for name in self.config.deployments:
            for record in self.store.load(name).health:
                at = float(record.get("at", 0.0))
                key = f"{name}/{record.get('name')}"
                if at > self._seen_checks.get(key, 0.0):
                    self._seen_checks[key] = at
                    if not record.get("ok", True):
                        self.health_failures[name] += 1

    async def _check_external(self) -> None:
        """external and monitored deployments: no launcher of ours checks them, so we do."""
        for name, deployment in self.config.deployments.items():
            if deployment.mode == "managed":
                continue
            monitor = self._external.get(name)
            if monitor is None:
                url = (deployment.url or f"http://{deployment.host}:{deployment.port}").rstrip("/")
                target = EngineTarget(deployment=name, url=url, served_model_name=deployment.served_name)
                strategies = [self.plugins.health_strategy(check) for check in deployment.health.checks]
                monitor = self._external[name] = HealthMonitor(strategies, deployment.health, target)
            result = await monitor.round()
            if not result.ok:
                self.health_failures[name] += 1
            self._external_results[name] = {
                "ok": result.ok,
                "unhealthy": result.unhealthy,
                "failed_check": result.failed_check,
                "detail": result.detail,
                "records": monitor.records(),
                "at": time.time(),
            }

    # API -----------------------------------------------------------------------------------

    async def statuses(self) -> list[dict[str, Any]]:
        deployments = self.deployments()
        rows = []
        for name, deployment in sorted(self.config.deployments.items()):
            saved = self.store.load(name)
            if deployment.mode == "external":
                external = self._external_results.get(name, {})
                state = "ready" if external.get("ok") else ("unhealthy" if external else "starting")
                row: dict[str, Any] = {
                    "name": name,
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
            else:
                status = await self._unit_status(deployments, deployment)
                row = status.as_json() | {"mode": deployment.mode, "health": saved.health}
            row["tests"] = saved.tests
            row["transitions"] = [t.__dict__ for t in self.history.last(name)]
            row["health_failures"] = self.health_failures[name]
            rows.append(row)
        return rows

    async def _unit_status(self, deployments: Deployments, deployment: Deployment) -> DeploymentStatus:
        """From the watched state (signals keep it fresh); systemd is asked only for an unseen unit."""
        unit = self.watcher.units.get(deployment.name) or await self.units.get_state(unit_name(deployment.name))
        return deployments.status_of(deployment, unit)

    async def _status_route(self) -> tuple[int, str, bytes]:
        return json_response({"deployments": await self.statuses(), "daemon": {"pid": os.getpid()}})

    async def _metrics_route(self) -> tuple[int, str, bytes]:
        deployments = self.deployments()
        rows = []
        for name, deployment in sorted(self.config.deployments.items()):
            if deployment.mode == "external":
                continue
            status = await self._unit_status(deployments, deployment)
            rows.append((status, self.store.load(name), self.health_failures[name]))
        return 200, "text/plain; version=0.0.4", render_metrics(rows).encode()

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
