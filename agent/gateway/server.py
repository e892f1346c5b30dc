"""The gateway's HTTP/1.1 server: asyncio protocols and httptools' parser, nothing more.

A lean request path is the point (bench/RESULTS.md: aiohttp alone costs more per request than
the whole budget allows). One task per request; a client that disconnects cancels its task at
once, which is how an upstream request is aborted (cancellation).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import httptools

MAX_BODY = 64 * 1024 * 1024  # a request body above this is refused (413)
MAX_HEADERS = 100
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class Request:
    __slots__ = ("method", "path", "headers", "body", "keep_alive", "peer")

    def __init__(self, method: str, path: str, headers: dict[bytes, bytes], body: bytes, keep_alive: bool) -> None:
        self.method = method
        self.path = path
        self.headers = headers  # lower-case names
        self.body = body
        self.keep_alive = keep_alive
        self.peer = ""


Handler = Callable[[Request, "Responder"], Awaitable[None]]


class Responder:
    """Writes one response; streams use chunked encoding and wait while the client is slow."""

    __slots__ = ("_protocol", "keep_alive", "started", "status", "sent")

    def __init__(self, protocol: HttpProtocol, keep_alive: bool) -> None:
        self._protocol = protocol
        self.keep_alive = keep_alive
        self.started = False
        self.status = 0
        self.sent = 0  # body bytes written

    def _head(self, status: int, headers: list[tuple[bytes, bytes]], extra: bytes) -> bytes:
        self.started, self.status = True, status
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"OK"))]
        lines.extend(b"%s: %s\r\n" % pair for pair in headers)
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(extra)
        return b"".join(lines)

    def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        head = self._head(status, headers, b"content-length: %d\r\n\r\n" % len(body))
        self._protocol.write(head + body)
        self.sent += len(body)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._protocol.write_soon(self._head(status, headers, b"transfer-encoding: chunked\r\n\r\n"))
        await self._protocol.drained()

    async def write(self, data: bytes) -> None:
        if data:
            self._protocol.write_soon(b"%x\r\n%s\r\n" % (len(data), data))
            self.sent += len(data)
            await self._protocol.drained()

    def end(self) -> None:
        self._protocol.write_soon(b"0\r\n\r\n")


class HttpProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._soon: list[bytes] = []  # stream pieces of this loop turn, sent as one write
        self.closed = False

    # asyncio ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400)
        except httptools.HttpParserError:
            self._fail(400)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client left: stop its upstream request now
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("client disconnected"))

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", {}, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= MAX_HEADERS:
            raise httptools.HttpParserError("too many headers")
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        # curl and others wait (a second) for this before sending a large body.
        if self._headers.get(b"expect", b"").lower() == b"100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            self._fail(413)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.closed:
            return
        request = Request(
            self.parser.get_method().decode("latin-1"),
            self._url.split(b"?", 1)[0].decode("latin-1"),
            self._headers,
            b"".join(self._body),
            self.parser.should_keep_alive(),
        )
        self._queue.append(request)
        if self._task is None:
            self._next()

    # inside -------------------------------------------------------------------------------------

    def _next(self) -> None:
        if not self._queue or self.closed:
            self._task = None
            return
        request = self._queue.popleft()
        self._task = asyncio.get_running_loop().create_task(self._handle(request))

    async def _handle(self, request: Request) -> None:
        responder = Responder(self, request.keep_alive)
        try:
            await self.handler(request, responder)
        except (ConnectionError, asyncio.CancelledError):
            self._close()
            return
        if not responder.keep_alive:
            self._close()
            return
        self._task = None
        self._next()

    def write(self, data: bytes) -> None:
        if self._soon:
            self._flush()
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def write_soon(self, data: bytes) -> None:
        """Send ``data`` at the end of this loop turn, with whatever else is written meanwhile:
        a stream's head, events and end go out in as few system calls as they arrive."""
        if not self._soon:
            asyncio.get_running_loop().call_soon(self._flush)
        self._soon.append(data)

    def _flush(self) -> None:
        if self._soon:
            data = b"".join(self._soon)
            self._soon.clear()
            if self.transport is not None and not self.closed:
                self.transport.write(data)

    async def drained(self) -> None:
        if self.closed:
            raise ConnectionResetError("client disconnected")
        if self._writable is not None and not self._writable.done():
            await self._writable

    def _fail(self, status: int) -> None:
        body = b'{"error": {"message": "bad request", "type": "BadRequestError", "code": %d}}' % status
        self.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS.get(status, b""), len(body), body)
        )
        self._close()

    def _close(self) -> None:
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def serve(handler: Handler, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: HttpProtocol(handler), host, port, reuse_address=True, backlog=1024)
