"""Connections to the engines: keep-alive HTTP/1.1 over asyncio protocols, parsed by httptools.

``UpstreamError`` means the engine could not be reached or dropped the connection; whether
that is retried (before the first byte) or migrated (mid-stream) is the proxy's decision.
Closing a response that is not complete aborts its connection: vLLM aborts a request whose
client went away, so the engine stops generating.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

CONNECT_TIMEOUT = 5.0
IDLE_PER_ENGINE = 256  # idle keep-alive connections kept per engine


class UpstreamError(Exception):
    """The engine refused, dropped or broke the connection."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.response: UpstreamResponse | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._broken(UpstreamError(f"bad HTTP from the engine: {err}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._broken(UpstreamError("the engine closed the connection" + (f": {exc}" if exc else "")))

    def _broken(self, err: UpstreamError) -> None:
        response = self.response
        if response is not None and not response.complete:
            response._fail(err)

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        if self.response is not None:
            self.response.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response.status = self.parser.get_status_code()
            self.response._wake()

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._chunks.append(body)
            self.response._wake()

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response.complete = True
            self.response.keep_alive = self.parser.should_keep_alive()
            self.response._wake()


class UpstreamResponse:
    def __init__(self, pool: Pool, key: tuple[str, int], conn: _Connection) -> None:
        self._pool = pool
        self._key = key
        self._conn = conn
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.complete = False
        self.keep_alive = False
        self._chunks: deque[bytes] = deque()
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, err: UpstreamError) -> None:
        self._error = err
        self._wake()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None and not self._chunks:
            raise self._error

    async def headers_ready(self) -> None:
        while not self.status and not self.complete:
            await self._wait()

    async def chunk(self) -> bytes:
        """What arrived of the body since the last call; b"" once it is complete. Raises UpstreamError when the
        connection breaks first."""
        while True:
            if self._chunks:  # everything that arrived: one piece to relay, not one per event
                chunks = self._chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                return data
            if self.complete:
                self.release()
                return b""
            await self._wait()

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.chunk():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Done with it: a complete keep-alive response gives its connection back; anything
        else aborts the connection (the engine sees the client go and stops generating)."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        conn.response = None
        if self.complete and self.keep_alive and not conn.lost and self._error is None:
            self._pool._idle_put(self._key, conn)
        elif conn.transport is not None:
            conn.transport.abort()


class Pool:
    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}

    def _idle_put(self, key: tuple[str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, deque())
        if len(idle) < IDLE_PER_ENGINE:
            idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    async def _connect(self, key: tuple[str, int]) -> tuple[_Connection, bool]:
        """A connection and whether it was kept alive from an earlier request."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.lost:
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(_Connection, key[0], key[1]), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as err:
            raise UpstreamError(f"cannot connect to {key[0]}:{key[1]}: {err}") from None
        return conn, False

    async def request(self, host: str, port: int, head: bytes, body: bytes) -> UpstreamResponse:
        """Send ``head`` (request line and headers, without Host and Content-Length) and ``body``;
        return once the response's headers arrived."""
        key = (host, port)
        for attempt in (0, 1):
            conn, reused = await self._connect(key)
            response = UpstreamResponse(self, key, conn)
            conn.response = response
            assert conn.transport is not None
            conn.transport.write(
                head + b"host: %s:%d\r\ncontent-length: %d\r\n\r\n" % (host.encode(), port, len(body)) + body
            )
            try:
                await response.headers_ready()
                return response
            except UpstreamError:
                response.release()
                # A kept-alive connection the engine closed meanwhile: one fresh try.
                if attempt or not reused:
                    raise
            except BaseException:  # cancelled (the client left): abort, so the engine stops
                response.release()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
