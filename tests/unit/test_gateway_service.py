"""`vllm-agent gateway` as systemd runs it: READY=1 once it listens, watchdog pings with a status
line, a clean stop; an address in use is one clear error. Its notify socket is the test's."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness.ports import PortLease
from vllm_agent.errors import AgentError
from vllm_agent.gateway.main import run_gateway
from vllm_agent.unit.notify import Notifier


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vags-", dir="/tmp"))  # Unix socket paths stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config(directory: Path, port: int) -> Path:
    conf = directory / "conf"
    conf.mkdir()
    (conf / "agent.toml").write_text(
        f'socket = "{directory / "none.sock"}"\nstate_dir = "{directory / "state"}"\n'
        f'[gateway]\nlisten = "127.0.0.1:{port}"\n'
    )
    return conf


async def test_ready_once_listening_with_watchdog_pings_and_a_clean_stop(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(short_dir / "notify"))
    systemd.setblocking(False)
    with PortLease() as lease:
        port = lease.port
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(config(short_dir, port), True, Notifier(str(short_dir / "notify")), stop))
    messages: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        while sum("WATCHDOG=1" in m for m in messages) < 3:
            messages.append((await asyncio.wait_for(loop.sock_recv(systemd, 4096), 10)).decode())
        ready = next(m for m in messages if "READY=1" in m)
        assert f"listening on 127.0.0.1:{port}" in ready
        assert any("0 model name(s) routable; daemon not reachable" in m for m in messages)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0
        systemd.close()


async def test_an_address_in_use_is_one_clear_error(short_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(AgentError) as caught:
            await run_gateway(config(short_dir, port), True, Notifier(""))
    assert f"cannot listen on 127.0.0.1:{port}" in caught.value.message and "[gateway] listen" in caught.value.hint
