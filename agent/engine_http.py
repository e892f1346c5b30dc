"""A small HTTP/1.1 client for an engine's own endpoints: /health, /v1/models, a one-token
completion, /metrics, a streamed chat.

The launcher and the health and smoke-test plugins send a few requests per interval to one engine,
so this is the standard library only (httpx costs the launcher ~6 MB and ~30 ms of imports):
asyncio streams, one connection per request (nothing pooled), TLS only for https URLs (external
deployments). The client closes each connection once it has read the answer, not the engine: the
side that closes first keeps the TIME_WAIT entry, and one on the engine's port would send the
next start's port check down its slow path (config/ports.py). The gateway's upstream client
(gateway/upstream.py) is the hot path and stays separate.

Every failure is one ``HttpError`` whose ``reason`` is one line and whose ``kind`` says what
happened (CONNECT, TIMEOUT, CLOSED, MALFORMED), so callers word their own messages. Sizes are
bounded: an engine answering garbage must not eat the launcher's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json as jsonlib
import socket
import ssl  # already loaded by asyncio; a context is made only for an https URL
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import AgentError
from .urls import bracketed

CONNECT, TIMEOUT, CLOSED, MALFORMED = "connect", "timeout", "closed", "malformed"
MAX_HEAD = 64 * 1024  # status line and headers; vLLM sends a few hundred bytes
MAX_BODY = 8 * 1024 * 1024  # /metrics of a busy multi-engine server stays far below
READ = 64 * 1024


class HttpError(AgentError):
    """A request that got no complete answer; ``reason`` is one line, ``kind`` one of the four."""

    code = "engine.http"
    transient = True  # the engine or the network; a later try may see it answer

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class Headers(dict[str, str]):
    """Response headers by lower-case name; repeated ones joined with ", " (RFC 9110)."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


class Response:
    """Status and headers at once; the body read whole (``read``) or line by line (``lines``)."""

    def __init__(self, status: int, headers: Headers, reader: asyncio.StreamReader, framing: str | int, limit: int):
        self.status = status
        self.headers = headers
        self.body = b""
        self._reader = reader
        self._framing = framing  # "chunked", "eof", or the Content-Length
        self._limit = limit

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return jsonlib.loads(self.body)

    async def read(self) -> bytes:
        data = bytearray()
        async for piece in self._pieces():
            data += piece
            if len(data) > self._limit:
                raise HttpError(f"answer larger than {self._limit} bytes", MALFORMED)
        self.body = bytes(data)
        return self.body

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines without their ends (server-sent events); only one line is held."""
        buffer = bytearray()
        async for piece in self._pieces():
            buffer += piece
            while (end := buffer.find(b"\n")) >= 0:
                yield buffer[:end].rstrip(b"\r").decode("utf-8", errors="replace")
                del buffer[: end + 1]
            if len(buffer) > self._limit:
                raise HttpError(f"a line longer than {self._limit} bytes", MALFORMED)
        if buffer:
            yield buffer.rstrip(b"\r").decode("utf-8", errors="replace")

    async def _pieces(self) -> AsyncIterator[bytes]:
        reader, framing = self._reader, self._framing
        with _failures():
            if isinstance(framing, int):
                if framing > self._limit:  # refuse before reading any of it
                    raise HttpError(f"answer larger than {self._limit} bytes ({framing} announced)", MALFORMED)
                async for piece in _exactly(reader, framing):
                    yield piece
            elif framing == "chunked":
                while size := _chunk_size(await reader.readuntil(b"\r\n")):
                    async for piece in _exactly(reader, size):
                        yield piece
                    if await reader.readexactly(2) != b"\r\n":
                        raise HttpError("malformed response: a chunk longer than its size", MALFORMED)
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields: nobody here needs them
            else:
                while piece := await reader.read(READ):
                    yield piece


async def request(method: str, url: str, **options: Any) -> Response:
    """Send one request and read the whole answer; see ``stream`` for the options."""
    async with stream(method, url, **options) as response:
        await response.read()
    return response


@contextlib.asynccontextmanager
async def stream(
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    max_body: int = MAX_BODY,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Response]:
    """One request on its own connection; the answer's body is read inside the block.

    ``timeout`` bounds everything, connecting to the last byte read in the block; ``max_body``
    bounds what is held at once (the whole body for ``read``, one line for ``lines``);
    ``ssl_context`` replaces the default one for https (a private CA).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    host, secure = parts.hostname, parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    fields = {"Host": bracketed(host) + (f":{parts.port}" if parts.port else "")}
    fields.update({"Accept-Encoding": "identity", "User-Agent": "vllm-agent", **(headers or {})})
    body = b"" if json is None else jsonlib.dumps(json).encode()
    if json is not None:
        fields["Content-Type"] = "application/json"
    if body or method in ("POST", "PUT", "PATCH"):
        fields["Content-Length"] = str(len(body))
    if any(c in f"{k}{v}" for k, v in fields.items() for c in "\r\n"):
        raise ValueError("a header name or value holds a line break")
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            context = (ssl_context or _default_tls()) if secure else None
            with _failures(connecting=True, host=host):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None, limit=MAX_HEAD
                )
            try:
                with _failures():
                    writer.write(head.encode("latin-1") + body)
                    await writer.drain()
                    status, fields_in = _parse_head(await reader.readuntil(b"\r\n\r\n"))
                yield Response(status, fields_in, reader, _framing(method, status, fields_in), max_body)
            finally:
                writer.close()  # not wait_closed(): a TLS peer may never answer close_notify
    except TimeoutError:
        if scope.expired():
            raise HttpError(f"timed out after {timeout:g}s", TIMEOUT) from None
        raise


def _parse_head(head: bytes) -> tuple[int, Headers]:
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise HttpError(f"malformed response: status line {status_line[:60]!r}", MALFORMED)
    headers = Headers()
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(f"malformed response: header line {line[:60]!r}", MALFORMED)
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(code), headers


def _framing(method: str, status: int, headers: Headers) -> str | int:
    """How the body ends (RFC 9112 section 6.3): no body, chunked, a length, or the connection's end."""
    if method == "HEAD" or status < 200 or status in (204, 304):
        return 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return "chunked"
    length = headers.get("content-length")
    if length is None:
        return "eof"
    if not length.isdigit():  # also refuses "5, 7": two different lengths
        raise HttpError(f"malformed response: Content-Length {length[:40]!r}", MALFORMED)
    return int(length)


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip()
    if not size or size.strip(b"0123456789abcdefABCDEF"):  # int(x, 16) would take "-1" or "0x1"
        raise HttpError(f"malformed response: chunk size {line.strip()[:40].decode('latin-1')!r}", MALFORMED)
    return int(size, 16)


async def _exactly(reader: asyncio.StreamReader, size: int) -> AsyncIterator[bytes]:
    while size:
        piece = await reader.read(min(size, READ))
        if not piece:
            raise asyncio.IncompleteReadError(b"", size)
        size -= len(piece)
        yield piece


@contextlib.contextmanager
def _failures(connecting: bool = False, host: str = "") -> Iterator[None]:
    """Socket and stream errors as HttpError with one line an operator understands."""
    try:
        yield
    except asyncio.LimitOverrunError:
        raise HttpError(f"malformed response: a header or chunk line longer than {MAX_HEAD} bytes", MALFORMED) from None
    except asyncio.IncompleteReadError:
        raise HttpError("the connection closed before a complete answer", CLOSED) from None
    except socket.gaierror as err:
        raise HttpError(f"name resolution failed for {host}: {err.strerror}", CONNECT) from None
    except ConnectionRefusedError:
        raise HttpError("connection refused", CONNECT) from None
    except OSError as err:
        if not connecting:  # reset, broken pipe: the engine went away mid-answer
            raise HttpError(f"the connection was lost: {err.strerror or err}", CLOSED) from None
        raise HttpError(_connect_failure(err), CONNECT) from None


def _connect_failure(err: OSError) -> str:
    # Python 3.11 folds one failure per address (localhost: ::1 and 127.0.0.1) into a plain
    # OSError("Multiple exceptions: ..."); all of them refused is still "connection refused".
    text = str(err)
    refused = f"[Errno {errno.ECONNREFUSED}]"
    if text.startswith("Multiple exceptions") and text.count("[Errno") == text.count(refused):
        return "connection refused"
    if isinstance(err, ssl.SSLError):
        verify = getattr(err, "verify_message", "")  # "self-signed certificate", "Hostname mismatch"
        return f"TLS failed: {err.reason or err}" + (f": {verify}" if verify else "")
    return f"cannot connect: {err.strerror or text}"


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """The system's CAs, loaded once (a few ms each time otherwise)."""
    return ssl.create_default_context()
