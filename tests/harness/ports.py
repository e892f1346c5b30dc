"""Ports for tests, taken from the kernel rather than from fixed numbers.

Two kinds of consumer, two ways to hand a port over without a window in which someone else
could take it:

* An engine the test starts itself (the fake or real vLLM; both bind with SO_REUSEADDR, as
  vLLM's ``create_server_socket`` does). ``PortLease`` binds port 0, so the kernel chooses, and
  keeps that socket bound but never listening while the engine binds the same port beside it.
  Meanwhile nobody else gets the port: a bind without SO_REUSEADDR fails and connect()'s
  automatic port choice skips ports that a bind() holds.
* The agent, which allocates from its own ``port_range`` and rightly refuses a port that another
  process has bound (it could be an engine still loading), so a held lease would look taken.
  ``agent_ports`` gives blocks below the kernel's ephemeral range (ip_local_port_range), which
  the kernel never hands out by itself (bind 0, connect), each port checked unbound when handed
  over and no block handed out twice while its claimant lives, across concurrent test runs too
  (a claim file per block in ``CLAIMS``, holding the claimant's pid).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000  # below: well-known and registered services a test must not collide with
CLAIMS = Path("/tmp/vllm-agent-test-ports")
_next_block_end: int | None = None


class PortLease:
    """A loopback port chosen by the kernel, held (bound, not listening) until ``release()``.

    Connections to it are refused, so it also serves as "a port where nothing listens"."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> PortLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def agent_ports(count: int = 40) -> tuple[int, int]:
    """``(low, high)``: ``count`` consecutive ports for an agent's ``port_range``, none bound now."""
    global _next_block_end
    if _next_block_end is None:
        _next_block_end = _ephemeral_low() - 1
    while _next_block_end - count + 1 >= _LOWEST:
        low, high = _next_block_end - count + 1, _next_block_end
        _next_block_end = low - 1
        if _claim(low, high) and all(_unbound(port) for port in range(low, high + 1)):
            return low, high
    raise RuntimeError(f"no block of {count} unbound ports left between {_LOWEST} and the ephemeral range")


def agent_port() -> int:
    """One port for a deployment file (``port = N``) that the agent checks and the engine binds."""
    return agent_ports(1)[0]


def _claim(low: int, high: int) -> bool:
    """Own ``low..high`` unless a live process claimed an overlapping block (claims are per block
    size, so overlap is checked by range, not by name)."""
    CLAIMS.mkdir(mode=0o700, exist_ok=True)
    with open(CLAIMS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # claims of different sizes can overlap: check and take as one
        return _claim_locked(low, high)


def _claim_locked(low: int, high: int) -> bool:
    for claim in CLAIMS.iterdir():
        if claim.name.startswith("."):
            continue
        try:
            their_low, their_high = map(int, claim.name.split("-"))
            pid = int(claim.read_text() or "0")
        except (OSError, ValueError):
            continue
        if their_low <= high and low <= their_high:
            if pid == os.getpid() or _alive(pid):
                return False
            with contextlib.suppress(FileNotFoundError):
                claim.unlink()  # its claimant is gone
    try:
        fd = os.open(CLAIMS / f"{low}-{high}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(str(os.getpid()))
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _unbound(port: int) -> bool:
    # A plain bind on the wildcard address fails when any socket holds the port on any address.
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
