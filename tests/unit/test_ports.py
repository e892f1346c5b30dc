"""Ports: who holds a port, whether an engine can listen on it, and which one a deployment gets.

Every test uses real sockets on loopback, opened and closed by the test itself.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.ports import agent_port, agent_ports
from vllm_agent.config.ports import (
    allocate_port,
    check_port_free,
    listening_ports,
    parse_proc_net_line,
    port_holder,
)
from vllm_agent.errors import NoFreePort, PortUnavailable

MY_NAME = Path("/proc/self/comm").read_text().strip()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def listen(opened: list[socket.socket], host: str = "127.0.0.1", port: int = 0, *, family: int = socket.AF_INET) -> int:
    sock = socket.socket(family, socket.SOCK_STREAM)
    opened.append(sock)
    sock.bind((host, port))
    sock.listen()
    return sock.getsockname()[1]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("use_diag", [True, False], ids=["sock_diag", "proc_net_tcp"])
def test_a_listening_socket_is_reported_with_this_process(sockets: list[socket.socket], use_diag: bool) -> None:
    port = listen(sockets)
    (holder,) = listening_ports(use_diag=use_diag)[port]
    assert (holder.address, holder.port, holder.uid) == ("127.0.0.1", port, os.getuid())
    assert (holder.pid, holder.process) == (os.getpid(), MY_NAME)


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this host")
@pytest.mark.parametrize("use_diag", [True, False], ids=["sock_diag", "proc_net_tcp"])
def test_ipv6_listeners_are_reported_too(sockets: list[socket.socket], use_diag: bool) -> None:
    port = listen(sockets, "::1", family=socket.AF_INET6)
    (holder,) = listening_ports(use_diag=use_diag)[port]
    assert holder.address == "::1" and holder.pid == os.getpid()


def test_a_taken_port_names_the_process_and_what_to_do(sockets: list[socket.socket]) -> None:
    port = listen(sockets)
    with pytest.raises(PortUnavailable) as caught:
        check_port_free(port, "127.0.0.1")
    assert caught.value.message == f"port {port} on 127.0.0.1 is taken by pid {os.getpid()} ({MY_NAME})"
    assert caught.value.hint == "choose another port in models.d/NAME.toml or stop that process"


def test_a_wildcard_listener_clashes_with_every_host(sockets: list[socket.socket]) -> None:
    port = listen(sockets, "0.0.0.0")
    for host in ("127.0.0.1", "127.0.0.2", "0.0.0.0"):
        holder = port_holder(port, host)
        assert holder is not None and holder.address == "0.0.0.0", host


def test_a_specific_listener_clashes_with_a_wildcard_host_but_not_another_address(sockets: list[socket.socket]) -> None:
    port = listen(sockets, "127.0.0.1")
    assert port_holder(port, "0.0.0.0") is not None
    assert port_holder(port, "127.0.0.2") is None
    check_port_free(port, "127.0.0.2")


@pytest.mark.parametrize("reuse_address", [False, True], ids=["plain", "SO_REUSEADDR like uvicorn"])
def test_a_port_bound_by_an_engine_still_loading_is_taken(sockets: list[socket.socket], reuse_address: bool) -> None:
    """vLLM binds early and listens only after loading: sock_diag cannot see that socket."""
    loading = socket.socket()
    sockets.append(loading)
    if reuse_address:
        loading.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    loading.bind(("127.0.0.1", 0))
    port = loading.getsockname()[1]
    assert port not in listening_ports()
    with pytest.raises(PortUnavailable) as caught:
        check_port_free(port, "127.0.0.1")
    assert f"port {port} on 127.0.0.1 is bound by another process" in caught.value.message
    assert "models.d/NAME.toml" in caught.value.hint


def test_connections_left_in_time_wait_do_not_block_a_restart(sockets: list[socket.socket]) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first, so its side of the port waits in TIME_WAIT
    time.sleep(0.05)
    client.close()
    server.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the leftover is real: a bind without SO_REUSEADDR fails
    check_port_free(port, "127.0.0.1")


def test_a_free_port_passes(sockets: list[socket.socket]) -> None:
    check_port_free(agent_port(), "127.0.0.1")


def test_a_host_that_is_not_this_machine_is_reported() -> None:
    with pytest.raises(PortUnavailable) as caught:
        check_port_free(agent_port(), "192.0.2.10")
    assert "192.0.2.10 is not an address of this host" in caught.value.message
    assert "`host`" in caught.value.hint


def test_allocation_skips_held_ports_and_ports_of_other_deployments(sockets: list[socket.socket]) -> None:
    held = listen(sockets)
    port = allocate_port((held, held + 20), taken={held + 1})
    assert held + 1 < port <= held + 20
    check_port_free(port, "127.0.0.1")


def test_allocation_gives_the_lowest_free_port() -> None:
    low, _ = agent_ports(11)
    assert allocate_port((low, low + 10), taken=set()) == low


def test_an_exhausted_range_says_how_to_widen_it(sockets: list[socket.socket]) -> None:
    held = listen(sockets)
    with pytest.raises(NoFreePort) as caught:
        allocate_port((held, held + 1), taken={held + 1})
    assert f"no free port in {held}-{held + 1}" in caught.value.message
    assert "port_range in agent.toml" in caught.value.hint


def test_proc_net_tcp_lines_are_decoded() -> None:
    v4 = (
        "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 "
        "1 0 100 0 0 10 0"
    )
    v6 = (
        "   1: 00000000000000000000000001000000:1F41 00000000000000000000000000000000:0000 0A 00000000:00000000 "
        "00:00000000 00000000     0        0 4343 1 0 100 0 0 10 0"
    )
    mapped = (
        "   2: 0000000000000000FFFF00000100007F:1F42 00000000000000000000000000000000:0000 06 00000000:00000000 "
        "00:00000000 00000000     0        0 0 3 0"
    )
    assert tuple(parse_proc_net_line(v4)) == ("127.0.0.1", 8000, 1000, 4242, 10)
    assert tuple(parse_proc_net_line(v6)) == ("::1", 8001, 0, 4343, 10)
    assert parse_proc_net_line(mapped).address == "127.0.0.1"
    assert parse_proc_net_line("  sl  local_address rem_address   st tx_queue") is None
