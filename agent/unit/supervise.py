"""After ready: run the health checks; trigger systemd's watchdog when they keep failing.

This runs in the unit's own main process, so a hung engine is restarted by systemd alone
(Result=watchdog), with or without the agent daemon.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from structlog.typing import FilteringBoundLogger

from ..config.schema import Deployment
from ..deployments.state import StateStore
from ..plugin_api import EngineTarget
from ..pluginhost.manager import Plugins
from .engine_process import EngineProcess
from .health import HealthMonitor
from .notify import Notifier

Outcome = Literal["stop", "exited", "unhealthy"]


class Supervisor:
    def __init__(
        self,
        deployment: Deployment,
        plugins: Plugins,
        target: EngineTarget,
        notifier: Notifier,
        store: StateStore,
        log: FilteringBoundLogger,
    ) -> None:
        self.deployment = deployment
        self.target = target
        self.notifier = notifier
        self.store = store
        self.log = log
        strategies = [plugins.health_strategy(name) for name in deployment.health.checks]
        self.monitor = HealthMonitor(strategies, deployment.health, target)
        self.serving_line = f"serving {deployment.served_name} on {target.url}"

    async def run(self, exited: asyncio.Task[int], stopping: asyncio.Task[bool], engine: EngineProcess) -> Outcome:
        """Return "stop" when asked to stop, "exited" when the engine ended by itself, and
        "unhealthy" once the checks failed failure_threshold rounds in a row."""
        interval = self.deployment.health.interval
        next_round = time.monotonic() + interval
        round_task: asyncio.Task | None = None
        was_failing = False
        try:
            while True:
                waits = {exited, stopping} | ({round_task} if round_task else set())
                timeout = max(0.0, next_round - time.monotonic()) if round_task is None else None
                done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    return "stop"
                if exited in done:
                    return "exited"
                if round_task is not None and round_task.done():
                    result = round_task.result()
                    round_task = None
                    next_round = time.monotonic() + interval
                    self.store.update(self.deployment.name, health=self.monitor.records())
                    if result.unhealthy:
                        reason = f"unhealthy: {result.failed_check}: {result.detail}"
                        self.store.update(self.deployment.name, phase="unhealthy", reason=reason, hint="")
                        self.log.error(
                            "unhealthy",
                            check=result.failed_check,
                            detail=result.detail,
                            failures=result.consecutive_failures,
                        )
                        await engine.kill_leftovers()  # a hung engine would not honour SIGTERM
                        self.notifier.watchdog_trigger(f"{reason}; restarting")
                        return "unhealthy"
                    if not result.ok:
                        was_failing = True
                        self.log.warning(
                            "health check failed",
                            check=result.failed_check,
                            detail=result.detail,
                            failures=result.consecutive_failures,
                        )
                        count = f"{result.consecutive_failures}/{self.deployment.health.failure_threshold}"
                        self.notifier.status(
                            f"{self.serving_line}; check {result.failed_check} failed ({count}): {result.detail}"
                        )
                    elif was_failing:
                        was_failing = False
                        self.store.update(self.deployment.name, phase="serving", reason="")
                        self.notifier.status(self.serving_line)
                if round_task is None and time.monotonic() >= next_round:
                    round_task = asyncio.create_task(self.monitor.round(), name="health-round")
        finally:
            if round_task is not None:
                round_task.cancel()
                await asyncio.gather(round_task, return_exceptions=True)
            await self.monitor.aclose()
