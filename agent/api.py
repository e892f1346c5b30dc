"""The daemon's local status API: a little HTTP over a Unix socket, and its client.

GET /v1/status (JSON), GET /metrics (Prometheus text), POST /v1/reload.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Handler = Callable[[], Awaitable[tuple[int, str, bytes]]]
MAX_REQUEST = 8192


class ApiServer:
    def __init__(self, path: Path, routes: dict[tuple[str, str], Handler]) -> None:
        self.path = path
        self.routes = routes
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # a stale socket of a killed daemon
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            handler = self.routes.get((method, target.split("?", 1)[0]))
            if handler is None:
                status, kind, body = 404, "application/json", b'{"error": "not found"}'
            else:
                status, kind, body = await handler()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, kind, body = 400, "application/json", b'{"error": "bad request"}'
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        try:
            await writer.drain()
        finally:
            writer.close()


def json_response(data: Any) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(data).encode()


async def request(path: Path, method: str = "GET", target: str = "/v1/status", timeout: float = 5.0) -> bytes | None:
    """The response body, or None when no daemon listens on ``path``."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    except (FileNotFoundError, ConnectionRefusedError, PermissionError, TimeoutError):
        return None
    try:
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: vllm-agent\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    return body
