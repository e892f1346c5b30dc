"""The status API's client: one bounded call, by default within a second.

A daemon that accepts connections but does not answer (hung, stopped with SIGSTOP, swapping)
must never hold a command up: every failure returns no body, and a socket that did not answer
is not asked again by this process. Plain sockets, no asyncio: `status` imports this cheaply.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import NamedTuple

TIMEOUT = 1.0  # seconds for connect, request and the whole answer together


class Reply(NamedTuple):  # not a dataclass: `dataclasses` (with inspect) is 6 ms of `status`
    body: bytes | None  # the body of a 200 answer; None otherwise
    silent: str = ""  # why a daemon that listens gave no usable answer; "" when none listens

    @property
    def listening(self) -> bool:
        return self.body is not None or bool(self.silent)


_silent: dict[str, str] = {}  # sockets that did not answer, with why


def call(
    path: Path, method: str = "GET", target: str = "/v1/status", timeout: float = TIMEOUT, *, memo: bool = True
) -> Reply:
    """``memo``: a socket found silent before in this process answers None at once (a command
    asks at most once); False asks afresh and remembers nothing."""
    if memo and str(path) in _silent:
        return Reply(None, _silent[str(path)])
    remember = _remember if memo else _silent_reply
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            client.connect(str(path))
        except TimeoutError:
            return remember(path, f"did not accept a connection within {timeout:g}s")
        except OSError:  # no socket, a stale one (refused), not ours to use: no daemon to wait for
            return Reply(None)
        try:
            client.sendall(f"{method} {target} HTTP/1.1\r\nHost: vllm-agent\r\nContent-Length: 0\r\n\r\n".encode())
            raw = _read_all(client, deadline)
        except TimeoutError:
            return remember(path, f"did not answer within {timeout:g}s")
        except OSError as err:
            return remember(path, f"dropped the connection ({err.strerror or err})")
    head, _, body = raw.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200 "):
        return Reply(body)
    first = head.split(b"\r\n", 1)[0][:60].decode("latin-1") or "nothing"
    return remember(path, f"answered {first!r} instead of HTTP 200")


def _read_all(client: socket.socket, deadline: float) -> bytes:
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        client.settimeout(left)
        chunk = client.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _remember(path: Path, why: str) -> Reply:
    _silent[str(path)] = why
    return _silent_reply(path, why)


def _silent_reply(path: Path, why: str) -> Reply:
    return Reply(None, why)
