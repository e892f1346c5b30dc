"""sd_notify messages, read from a real datagram socket as systemd would read them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm_agent.unit.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def fields(sock: socket.socket) -> list[str]:
    # systemd splits a notification on "\n" into KEY=value fields.
    return sock.recv(65536).decode("utf-8").split("\n")


def test_no_text_can_add_a_field(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier(path)
    try:
        notifier.status("engine said: boom\nREADY=1\rMAINPID=1\0\x1b[0m")
        assert fields(sock) == ["STATUS=engine said: boom READY=1 MAINPID=1\ufffd\ufffd[0m"]
        notifier.ready("serving\nWATCHDOG=trigger")
        assert fields(sock) == ["READY=1", "STATUS=serving WATCHDOG=trigger"]
        notifier.watchdog_trigger("health failed:\n" + "x" * 1000)
        status, watchdog = fields(sock)
        assert watchdog == "WATCHDOG=trigger" and len(status) == len("STATUS=") + 400
        assert notifier.last_status == status.removeprefix("STATUS=")
    finally:
        notifier.close()


def test_text_systemd_would_reject_as_not_utf8_is_replaced(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier(path)
    try:
        notifier.stopping("bad \ufffe and \ud800 lone surrogate")
        assert fields(sock) == ["STOPPING=1", "STATUS=bad \ufffd and \ufffd lone surrogate"]
    finally:
        notifier.close()
