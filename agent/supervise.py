"""After ready: watch the engine, keep systemd's watchdog fed while it is healthy."""

from __future__ import annotations

import asyncio
from typing import Literal

from structlog.typing import FilteringBoundLogger

from .config import Deployment
from .notify import Notifier
from .plugin_api import EngineTarget
from .plugins import Plugins
from .state import StateStore

Outcome = Literal["stop", "exited"]


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
        self.plugins = plugins
        self.target = target
        self.notifier = notifier
        self.store = store
        self.log = log

    async def run(self, exited: asyncio.Task[int], stopping: asyncio.Task[bool]) -> Outcome:
        """Return "stop" when asked to stop, "exited" when the engine ended by itself."""
        watchdog = self.notifier.watchdog_usec / 1e6
        period = watchdog / 3 if watchdog else 5.0
        while True:
            done, _ = await asyncio.wait({exited, stopping}, timeout=period, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return "stop"
            if exited in done:
                return "exited"
            if watchdog:
                self.notifier.watchdog()
