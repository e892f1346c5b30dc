"""The daemon's view of the deployments, pushed to the gateway: GET /v1/events on its socket.

Each line is the whole view (``{"deployments": [...]}``); blank lines are heartbeats. When the
daemon is away the gateway keeps the last view it had (deployments keep serving without the
daemon, and a dead engine is still skipped by the retries) and reconnects with a growing delay.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..log import get_logger

MAX_DELAY = 5.0
SILENCE = 60.0  # seconds without even a heartbeat before the stream counts as dead


async def follow(socket: Path, apply: Callable[[list[dict[str, Any]]], None], connected: asyncio.Event) -> None:
    """Apply every view the daemon sends, forever; ``connected`` is set while a stream is open."""
    log = get_logger(component="gateway")
    delay = 0.2
    warned = False
    while True:
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket), limit=16 * 1024 * 1024)
        except OSError as err:
            if not warned:
                log.warning("cannot reach the agent daemon; keeping the last view", socket=str(socket), error=str(err))
                warned = True
            await asyncio.sleep(delay)
            delay = min(MAX_DELAY, delay * 2)
            continue
        try:
            writer.write(b"GET /v1/events HTTP/1.1\r\nHost: vllm-agent\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if not head.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(f"the daemon answered {head.splitlines()[0]!r} (an older daemon?)")
            connected.set()
            delay, warned = 0.2, False
            log.info("following the agent daemon's deployment view", socket=str(socket))
            while line := await asyncio.wait_for(reader.readline(), SILENCE):
                if line.strip():
                    apply(json.loads(line)["deployments"])
        except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError) as err:
            log.warning("the agent daemon's event stream ended; reconnecting", error=str(err) or type(err).__name__)
        finally:
            connected.clear()
            writer.close()
        await asyncio.sleep(delay)
