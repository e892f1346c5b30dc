"""The status API's client never hangs on a daemon that does not answer, and its server refuses
to take over a socket another daemon serves."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm_agent.daemon.api import ApiServer, json_response
from vllm_agent.daemon.api_client import call
from vllm_agent.errors import DaemonRunning


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vaa-", dir="/tmp"))  # socket paths must be short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_daemon_that_accepts_but_never_answers_costs_about_a_second(sock_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(sock_dir / "agent.sock"))
        mute.listen()  # connections queue up; nobody ever reads them
        started = time.monotonic()
        reply = call(sock_dir / "agent.sock")
        assert time.monotonic() - started < 3
        assert reply.body is None and reply.silent == "did not answer within 1s" and reply.listening
        assert call(sock_dir / "agent.sock") == reply  # asked once per process, not again


def test_garbage_instead_of_http_is_no_answer(sock_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(sock_dir / "agent.sock"))
        server.listen()

        def answer() -> None:
            client, _ = server.accept()
            with client:
                client.recv(4096)
                client.sendall(b"\x00\xffnot http at all\r\n\r\n{}")

        thread = threading.Thread(target=answer)
        thread.start()
        reply = call(sock_dir / "agent.sock")
        thread.join()
    assert reply.body is None and reply.silent.startswith("answered '") and "instead of HTTP 200" in reply.silent


def test_no_daemon_is_no_answer_and_nothing_to_warn_about(sock_dir: Path) -> None:
    assert not call(sock_dir / "missing.sock").listening
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(sock_dir / "stale.sock"))  # a killed daemon's socket file: refused
    assert not call(sock_dir / "stale.sock").listening


async def status() -> tuple[int, str, bytes]:
    return json_response({"deployments": [], "daemon": {"pid": os.getpid()}})


async def test_a_second_server_refuses_naming_the_first_and_leaves_its_socket_alone(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    first = ApiServer(path, {("GET", "/v1/status"): status})
    await first.start()
    try:
        second = ApiServer(path, {("GET", "/v1/status"): status})
        with pytest.raises(DaemonRunning, match=f"another agent daemon \\(PID {os.getpid()}\\) already serves {path}"):
            await second.claim()
        await second.close()  # what a refused daemon's shutdown does: nothing to the first's socket
        reply = await asyncio.to_thread(call, path)
        assert reply.body is not None and b'"deployments"' in reply.body
    finally:
        await first.close()
    assert not path.exists()
    third = ApiServer(path, {("GET", "/v1/status"): status})
    await third.start()  # the lock went with the first
    await third.close()


async def test_a_listener_without_the_lock_is_not_taken_over(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        server = ApiServer(path, {})
        with pytest.raises(DaemonRunning, match="another process already listens on .* and did not answer"):
            await server.start()
        assert path.exists()
    # The refusal gave the lock back: once the other is gone, a daemon starts.
    await server.start()
    await server.close()
