"""Stopping asyncio tasks for sure.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives just as the awaited
thing completes (fixed in 3.12), and sdbus and the health checks use it: a task cancelled once
can carry on. Shutdown must not hang on that, so cancel until the task is really done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RETRY = 0.1  # seconds between cancellations of a task that carried on


async def cancel_all(tasks: Iterable[asyncio.Future[Any] | None]) -> None:
    """Cancel ``tasks`` and return once each is done (None entries are skipped)."""
    given = [task for task in tasks if task is not None]
    pending = {task for task in given if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RETRY)
    for task in given:
        if not task.cancelled():
            task.exception()  # seen: a task that failed while stopping is not news now
