"""Which TCP ports are taken on this host, by whom, and which one a new deployment may have.

vLLM sets SO_REUSEPORT, so two engines of one user can both bind a port: the agent must check
before it starts one. Listening sockets come from sock_diag (pyroute2), with /proc/net/tcp{,6}
as the fallback; their inodes are mapped to processes through /proc/PID/fd. A socket that is
bound but not yet listening (vLLM while it loads the model) is invisible there, so a real bind
attempt completes the check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..errors import NoFreePort, PortUnavailable

PROC = Path("/proc")
TCP_LISTEN = 10  # SS_LISTEN / st 0A in /proc/net/tcp
TCP_ALL = (1 << 12) - 1
TAKEN_HINT = "choose another port in models.d/NAME.toml or stop that process"


@dataclass(frozen=True)
class Holder:
    """A listening socket: its local address and who owns it (pid is None when not visible)."""

    address: str
    port: int
    uid: int
    pid: int | None = None
    process: str | None = None

    def describe(self) -> str:
        if self.pid is None:
            return f"a process of uid {self.uid} (its pid is not visible to this user)"
        return f"pid {self.pid} ({self.process or 'unknown'})"


class _Socket(NamedTuple):
    address: str
    port: int
    uid: int
    inode: int
    state: int


def listening_ports(*, use_diag: bool = True) -> dict[int, list[Holder]]:
    """Every listening TCP port (IPv4 and IPv6) -> its holders. ``use_diag=False`` reads /proc."""
    found: dict[int, list[Holder]] = {}
    for holder in _holders(_inet_sockets(1 << TCP_LISTEN, use_diag=use_diag)):
        found.setdefault(holder.port, []).append(holder)
    return found


def port_holder(port: int, host: str) -> Holder | None:
    """Who listens on ``port`` where it clashes with ``host``; wildcard binds clash with any host."""
    wanted = _addresses(host, port)
    listeners = [s for s in _inet_sockets(1 << TCP_LISTEN) if s.port == port]
    clashing = [s for s in listeners if any(_clash(s.address, address) for address in wanted)]
    return _holders(clashing[:1])[0] if clashing else None


def check_port_free(port: int, host: str) -> None:
    """Raise PortUnavailable unless a new engine can listen on ``host:port``."""
    # The common case costs one bind per address: a plain bind (no SO_REUSEPORT) succeeds only
    # when no socket holds the port. Only a refusal needs the socket tables, to name the holder.
    if _binds_cleanly(_addresses(host, port), port):
        return
    holder = port_holder(port, host)
    if holder is not None:
        raise PortUnavailable(f"port {port} on {host} is taken by {holder.describe()}", hint=TAKEN_HINT)
    addresses = _addresses(host, port)
    unavailable = 0
    for address in addresses:
        try:
            _probe_bind(address, port, host)
        except _AddressNotHere:
            unavailable += 1
    if unavailable == len(addresses):
        raise PortUnavailable(
            f"{host} is not an address of this host, so port {port} cannot be bound there",
            hint="set `host` in models.d/NAME.toml to 127.0.0.1, 0.0.0.0 or an address shown by `ip addr`",
        )


def allocate_port(port_range: tuple[int, int], taken: set[int]) -> int:
    """The lowest port in ``port_range`` not in ``taken`` (other deployments) nor held on the host."""
    low, high = port_range
    busy = {s.port for s in _inet_sockets(1 << TCP_LISTEN)}
    for port in range(low, high + 1):
        if port in taken or port in busy:
            continue
        try:
            _probe_bind("0.0.0.0", port, "0.0.0.0")
        except (PortUnavailable, _AddressNotHere):
            continue
        return port
    raise NoFreePort(
        f"no free port in {low}-{high}: {len(taken & set(range(low, high + 1)))} used by deployments, "
        "the rest held by other processes",
        hint="widen port_range in agent.toml, or set `port` in models.d/NAME.toml",
    )


# Probing ---------------------------------------------------------------------------------------


class _AddressNotHere(Exception):
    pass


def _binds_cleanly(addresses: list[str], port: int) -> bool:
    for address in addresses:
        try:
            _bind(address, port, reuse_address=False)
        except OSError:
            return False
    return bool(addresses)


def _probe_bind(address: str, port: int, host: str) -> None:
    """Bind as a new engine must be able to, without SO_REUSEPORT; raise PortUnavailable if not."""
    try:
        _bind(address, port, reuse_address=False)
        return
    except OSError as err:
        if err.errno == errno.EADDRNOTAVAIL:
            raise _AddressNotHere from None
        if err.errno == errno.EACCES:
            raise PortUnavailable(
                f"port {port} on {host} needs privileges to bind (ports below 1024)",
                hint="choose a port of 1024 or above in models.d/NAME.toml",
            ) from None
        if err.errno != errno.EADDRINUSE:
            raise PortUnavailable(f"cannot bind port {port} on {host}: {err.strerror}", hint=TAKEN_HINT) from None
    # In use without a listener: either leftovers of closed connections (TIME_WAIT, which the
    # engine's SO_REUSEADDR bind ignores) or a socket bound by a process that does not listen yet.
    try:
        _bind(address, port, reuse_address=True)
    except OSError:
        raise PortUnavailable(f"port {port} on {host} is bound by another process", hint=TAKEN_HINT) from None
    if not any(s.port == port for s in _inet_sockets(TCP_ALL & ~(1 << TCP_LISTEN))):
        raise PortUnavailable(
            f"port {port} on {host} is bound by another process that does not listen yet "
            "(for example an engine still loading its model)",
            hint=TAKEN_HINT,
        )


def _bind(address: str, port: int, *, reuse_address: bool) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if reuse_address:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address, port))


def _addresses(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise PortUnavailable(
            f"cannot check port {port} on {host}: the host name does not resolve ({err.strerror})",
            hint="set `host` in models.d/NAME.toml to an IP address of this machine",
        ) from None
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def _clash(held: str, wanted: str) -> bool:
    a, b = ipaddress.ip_address(held), ipaddress.ip_address(wanted)
    return a.is_unspecified or b.is_unspecified or a == b


# Reading the socket tables -------------------------------------------------------------------


def _inet_sockets(states: int, *, use_diag: bool = True) -> list[_Socket]:
    if use_diag:
        try:
            return _outside_event_loop(_diag_sockets, states)
        except Exception:  # no netlink sock_diag here (module, seccomp, permissions): read /proc
            pass
    return _proc_sockets(states)


def _outside_event_loop(function, *args):  # noqa: ANN001, ANN202
    """pyroute2 0.9's sync API runs its own event loop, which fails inside a running one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return function(*args)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def _diag_sockets(states: int) -> list[_Socket]:
    from pyroute2 import DiagSocket

    found = []
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in diag.get_sock_stats(family=family, states=states):
                found.append(
                    _Socket(
                        _plain(msg["idiag_src"]),
                        msg["idiag_sport"],
                        msg["idiag_uid"],
                        msg["idiag_inode"],
                        msg["idiag_state"],
                    )
                )
    return found


def _proc_sockets(states: int, proc: Path = PROC) -> list[_Socket]:
    found = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:  # no IPv6 on this host
            continue
        found.extend(s for s in (parse_proc_net_line(line) for line in lines) if s and states & (1 << s.state))
    return found


def parse_proc_net_line(line: str) -> _Socket | None:
    """One row of /proc/net/tcp or tcp6: ``sl local rem st ... uid timeout inode``."""
    fields = line.split()
    if len(fields) < 10 or ":" not in fields[1]:
        return None
    address_hex, port_hex = fields[1].split(":")
    # The kernel prints each 32-bit word of the address in host (little-endian) byte order.
    raw = b"".join(bytes.fromhex(address_hex[i : i + 8])[::-1] for i in range(0, len(address_hex), 8))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    address = _plain(socket.inet_ntop(family, raw))
    return _Socket(address, int(port_hex, 16), int(fields[7]), int(fields[9]), int(fields[3], 16))


def _holders(sockets: list[_Socket]) -> list[Holder]:
    owners = _socket_owners({s.inode for s in sockets if s.inode})
    return [Holder(s.address, s.port, s.uid, *owners.get(s.inode, (None, None))) for s in sockets]


def _plain(address: str) -> str:
    """::ffff:127.0.0.1 -> 127.0.0.1, so IPv4 clients of a dual-stack socket compare equal."""
    mapped = getattr(ipaddress.ip_address(address), "ipv4_mapped", None)
    return str(mapped) if mapped else address


def _socket_owners(inodes: Iterable[int], proc: Path = PROC) -> dict[int, tuple[int, str | None]]:
    """socket inode -> (pid, process name), for the processes this user may inspect."""
    wanted, owners = set(inodes), {}
    for entry in _pids(proc):
        if not wanted:
            break
        try:
            for fd in os.scandir(entry / "fd"):
                target = os.readlink(fd.path)
                if target.startswith("socket:["):
                    inode = int(target[8:-1])
                    if inode in wanted:
                        wanted.discard(inode)
                        owners[inode] = (int(entry.name), _process_name(entry))
        except OSError:  # gone, or another user's process
            continue
    return owners


def _pids(proc: Path) -> list[Path]:
    return sorted((p for p in proc.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _process_name(entry: Path) -> str | None:
    try:
        return (entry / "comm").read_text().strip() or None
    except OSError:
        return None
