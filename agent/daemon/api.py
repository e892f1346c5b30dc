"""The daemon's local status API: a little HTTP over a Unix socket, and its client.

GET /v1/status (JSON), GET /metrics (Prometheus text), POST /v1/reload, and GET /v1/events: a
long-lived answer of JSON lines, one each time what the handler watches changes (the gateway's
view of the deployments), until the client or the daemon goes.

One daemon per socket: ``claim()`` takes an flock on SOCKET.pid (holding our PID) and checks that
nothing listens on the socket before anything else happens, so a second `vllm-agent run` exits
naming the first and never unlinks the first's socket.
"""

from __future__ import annotations

import asyncio
import fcntl
import grp
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..errors import AgentError, DaemonRunning
from .api_client import TIMEOUT, Reply, call

Handler = Callable[[], Awaitable[tuple[int, str, bytes]]]
# A streaming route writes JSON lines to the writer until it returns or the client leaves.
StreamHandler = Callable[[asyncio.StreamWriter], Awaitable[None]]
MAX_REQUEST = 8192
ADMIN_GROUP = "vllm-admin"  # the package's operators group (sysusers.d, polkit)


class ApiServer:
    def __init__(
        self,
        path: Path,
        routes: dict[tuple[str, str], Handler],
        streams: dict[tuple[str, str], StreamHandler] | None = None,
    ) -> None:
        self.path = path
        self.routes = routes
        self.streams = streams or {}
        self.pid_file = path.with_name(path.name + ".pid")
        self._server: asyncio.AbstractServer | None = None
        self._lock: int | None = None

    async def claim(self) -> None:
        """Become the one daemon of this socket, or raise DaemonRunning naming the other."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.pid_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise AgentError(
                f"cannot create the daemon's lock file {self.pid_file}: {err.strerror or err}",
                hint="check that directory's permissions, or set 'socket' in agent.toml to a writable place",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DaemonRunning(
                f"another agent daemon (PID {pid}) already serves {self.path}",
                hint=f"stop that one first, or give this one another 'socket' in agent.toml ({self.pid_file})",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd
        # A daemon of a version without the lock, or another program: never take its socket.
        reply = await asyncio.to_thread(call, self.path, memo=False)
        if reply.listening:
            self._release()
            pid = _daemon_pid(reply)
            who = f"an agent daemon (PID {pid})" if pid else "another process"
            raise DaemonRunning(
                f"{who} already listens on {self.path}" + (f" and {reply.silent}" if reply.silent else ""),
                hint="stop it first, or give this daemon another 'socket' in agent.toml",
            )

    async def start(self) -> None:
        if self._lock is None:
            await self.claim()
        self.path.unlink(missing_ok=True)  # a stale socket of a killed daemon: nothing listens on it
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o660)
        _share_with_admins(self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self.path.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.ftruncate(self._lock, 0)  # no PID of a daemon that is gone
            os.close(self._lock)  # closing drops the flock
            self._lock = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            stream = self.streams.get((method, target.split("?", 1)[0]))
            if stream is not None:
                await self._stream(stream, writer)
                return
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

    async def _stream(self, handler: StreamHandler, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n")
        try:
            await handler(writer)
        except (ConnectionError, OSError):
            pass  # the subscriber went away
        finally:
            writer.close()


def json_response(data: Any) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(data).encode()


def _daemon_pid(reply: Reply) -> str:
    try:
        return str(int(json.loads(reply.body or b"")["daemon"]["pid"]))
    except (ValueError, KeyError, TypeError):
        return ""


async def ask(path: Path, method: str = "GET", target: str = "/v1/status", timeout: float = TIMEOUT) -> Reply:
    """The daemon's reply, within ``timeout`` whatever the daemon does (see api_client)."""
    return await asyncio.to_thread(call, path, method, target, timeout)


def _share_with_admins(path: Path) -> None:
    """The system scope's operators (group vllm-admin, whom polkit lets drive vllm@ units) get
    the daemon's fast status too, not a fallback to systemd after a warning."""
    if os.geteuid() != 0:
        return
    try:
        gid = grp.getgrnam(ADMIN_GROUP).gr_gid
    except KeyError:  # not installed from the package: root only, as before
        return
    os.chown(path, -1, gid)
