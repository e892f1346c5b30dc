"""Health checks the daemon runs itself: for external and monitored deployments, which no
launcher of ours checks.

Each deployment has a task of its own that runs a round every ``[health] interval``, so a hung
engine (each check bounded by its timeout) never delays another deployment's checks or the
daemon's loop. Checks that need it send the ``api_key`` credential as a Bearer token.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from structlog.typing import FilteringBoundLogger

from ..aio import cancel_all
from ..config.credentials import read_credential
from ..config.directory import Config
from ..config.schema import AgentSettings, Deployment
from ..errors import AgentError
from ..plugin_api import EngineTarget
from ..pluginhost.manager import Plugins
from ..unit.health import HealthMonitor
from ..urls import local_url


class ExternalChecks:
    def __init__(self, failures: Counter[str], log: FilteringBoundLogger) -> None:
        self.failures = failures  # failed rounds per deployment, shared with the daemon's count
        self.log = log
        self.results: dict[str, dict[str, Any]] = {}  # the latest round per deployment
        self._monitors: dict[str, HealthMonitor] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def restart(self, config: Config, plugins: Plugins) -> None:
        """Check what ``config`` has now, with ``plugins`` (both new after a reload)."""
        await self.stop()
        for name in [n for n in self.results if n not in config.deployments]:
            del self.results[name]
        api_key = await asyncio.to_thread(api_key_of, config.settings)
        for name, deployment in config.deployments.items():
            if deployment.mode == "managed":
                continue
            url = (deployment.url or local_url(deployment.host, deployment.port or 0)).rstrip("/")
            target = EngineTarget(deployment=name, url=url, served_model_name=deployment.served_name, api_key=api_key)
            try:
                strategies = [plugins.health_strategy(check) for check in deployment.health.checks]
                monitor = HealthMonitor(strategies, deployment.health, target)
            except AgentError as err:
                self.log.error("cannot check this deployment", deployment=name, error=err.message)
                continue
            self._monitors[name] = monitor
            self._tasks[name] = asyncio.create_task(self._run(deployment, monitor), name=f"health-{name}")

    async def stop(self) -> None:
        await cancel_all(list(self._tasks.values()))
        # Strategies may be shared between monitors: close them once no task uses them.
        for monitor in self._monitors.values():
            await monitor.aclose()
        self._tasks.clear()
        self._monitors.clear()

    async def _run(self, deployment: Deployment, monitor: HealthMonitor) -> None:
        name = deployment.name
        while True:
            result = await monitor.round()
            if not result.ok:
                self.failures[name] += 1
            self.results[name] = {
                "ok": result.ok,
                "unhealthy": result.unhealthy,
                "failed_check": result.failed_check,
                "detail": result.detail,
                "records": monitor.records(),
                "at": time.time(),
            }
            await asyncio.sleep(deployment.health.interval)


def api_key_of(settings: AgentSettings) -> str | None:
    return read_credential(settings.credentials_dir, "api_key")
