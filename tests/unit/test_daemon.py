"""The daemon keeps its promises to systemd while parts of its work hang: the watchdog is fed,
the status API answers, and external deployments are checked each at its own interval.

Runs the real Daemon against the fake unit manager, with a Notifier bound to a datagram socket
of the test (what systemd would receive) and real HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import structlog
from vllm_agent import hookimpl
from vllm_agent.daemon.api_client import call
from vllm_agent.daemon.main import Daemon
from vllm_agent.plugin_api import AgentSettings, GpuDevice, GpuSnapshot
from vllm_agent.testing.unit_manager import FakeUnitManager
from vllm_agent.unit.notify import Notifier

WATCHDOG_USEC = 400_000  # a ping every 0.1 s


class Systemd:
    """The notify socket: what the daemon tells systemd, with when it arrived. Read by a thread,
    as systemd reads it, so that a full queue never blocks the sender."""

    def __init__(self, path: Path) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.1)
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._closed.set()
        self._reader.join()
        self.socket.close()

    def watchdog_pings(self, since: float) -> int:
        return sum(1 for at, text in list(self.messages) if at >= since and "WATCHDOG=1" in text.split("\n"))

    def ready(self) -> bool:
        return any("READY=1" in text.split("\n") for _, text in list(self.messages))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes: tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="vad-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def systemd(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Systemd]:
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))  # as systemd sets it for WatchdogSec=
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    listener = Systemd(short_dir / "notify")
    yield listener
    listener.close()


@dataclass
class Setup:
    config_dir: Path
    socket: Path

    def write(self, name: str, text: str) -> None:
        (self.config_dir / "models.d").mkdir(parents=True, exist_ok=True)
        (self.config_dir / "models.d" / f"{name}.toml").write_text(text)


@pytest.fixture
def setup(tmp_path: Path, short_dir: Path) -> Setup:
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "api_key").write_text("sekrit\n")
    (config_dir / "agent.toml").write_text(
        f'unit_dir = "{tmp_path / "units"}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'socket = "{short_dir / "agent.sock"}"\ncredentials_dir = "{credentials}"\nport_range = [23000, 23100]\n'
    )
    return Setup(config_dir, short_dir / "agent.sock")


async def wait_until(what: str, check: Callable[[], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Daemon], asyncio.Task[int]]]:
    """Start daemons; each is stopped (and must stop cleanly) after the test."""
    started: list[tuple[asyncio.Event, asyncio.Task[int]]] = []

    def start(daemon: Daemon) -> asyncio.Task[int]:
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        started.append((stop, task))
        return task

    yield start
    for stop, task in started:
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0


class SlowStops(FakeUnitManager):
    """Stopping a unit hangs until released, as a stop with a long TimeoutStopSec does."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()

    async def stop(self, unit: str, *, wait: bool = True) -> str:
        self.stopping.set()
        await self.release.wait()
        return await super().stop(unit, wait=wait)


async def test_the_watchdog_and_the_api_keep_going_while_stopping_a_removed_deployment_hangs(
    setup: Setup, systemd: Systemd, running: Callable[[Daemon], asyncio.Task[int]]
) -> None:
    units = SlowStops()
    for name in ("keep", "gone"):
        units.define(f"vllm@{name}.service")
        setup.write(name, 'model = "org/m"\n')
    daemon = Daemon(setup.config_dir, True, units, notifier=Notifier(str(systemd.path)))
    running(daemon)
    await wait_until("READY=1", systemd.ready)
    await wait_until("both started", lambda: ("start", "vllm@gone.service") in units.calls)
    (setup.config_dir / "models.d" / "gone.toml").unlink()
    daemon.reload_requested.set()
    await asyncio.wait_for(units.stopping.wait(), 10)  # the reconcile now hangs in stop
    hanging_since = time.monotonic()
    await wait_until(
        "five watchdog pings while the stop hangs", lambda: systemd.watchdog_pings(since=hanging_since) >= 5
    )
    assert not units.release.is_set()  # still hanging: the pings came from a daemon stuck in a stop
    reply = await asyncio.to_thread(call, setup.socket)
    assert reply.body is not None, reply.silent
    assert {row["name"] for row in json.loads(reply.body)["deployments"]} == {"keep"}
    units.release.set()
    await wait_until("the removal", lambda: ("stop", "vllm@gone.service") in units.calls)


class HangingGpus:
    """A GPU backend whose vendor library never returns (a wedged driver)."""

    name = "wedged"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def unavailable(self) -> None:
        return None  # the library loaded; it is the device queries that hang

    def snapshot(self) -> list[GpuSnapshot]:
        self.entered.set()
        self.release.wait(30)
        return []

    def list_devices(self) -> list[GpuDevice]:
        return self.snapshot()

    @hookimpl
    def agent_gpu_backends(self, settings: AgentSettings) -> list[HangingGpus]:
        return [self]


async def test_a_hung_gpu_library_fails_only_the_deployment_that_needs_it(
    setup: Setup, systemd: Systemd, running: Callable[[Daemon], asyncio.Task[int]]
) -> None:
    units = FakeUnitManager()
    for name in ("plain", "gpu"):
        units.define(f"vllm@{name}.service")
    setup.write("plain", 'model = "org/m"\n')
    setup.write("gpu", 'model = "org/m"\ngpus = 1\n')
    gpus = HangingGpus()
    daemon = Daemon(
        setup.config_dir,
        True,
        units,
        notifier=Notifier(str(systemd.path)),
        extra_plugins=[("wedged", gpus)],
        gpu_timeout=1.0,
    )
    started = time.monotonic()
    try:
        with structlog.testing.capture_logs() as logs:
            running(daemon)
            await wait_until("READY=1", systemd.ready)
            refused = await wait_until(
                "the reconcile to give up on gpu",
                lambda: [e for e in logs if e["event"] == "deployment left out" and e.get("deployment") == "gpu"],
            )
        assert "'wedged' GPU backend did not list its devices within 1s" in refused[0]["reason"]
        assert gpus.entered.is_set() and not gpus.release.is_set()
        assert systemd.watchdog_pings(since=started) >= 5  # fed while the library hung
        # The refusal is logged while rendering; the starts come after it in the same pass.
        await wait_until("plain started", lambda: ("start", "vllm@plain.service") in units.calls)
        assert ("start", "vllm@gpu.service") not in units.calls
    finally:
        gpus.release.set()


class Engine(ThreadingHTTPServer):
    """An OpenAI-style /v1/models on 127.0.0.1 that records each request; ``delay`` makes it hang."""

    def __init__(self, served: str, delay: float = 0.0) -> None:
        self.served = served
        self.delay = delay
        self.requests: list[tuple[float, str, str]] = []  # (when, path, Authorization)
        super().__init__(("127.0.0.1", 0), _Handler)
        self.daemon_threads = True
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Engine

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests.append((time.monotonic(), self.path, self.headers.get("Authorization", "")))
        time.sleep(self.server.delay)
        body = json.dumps({"object": "list", "data": [{"id": self.server.served}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the check gave up waiting

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def engines() -> Iterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def make(served: str, delay: float = 0.0) -> Engine:
        made.append(Engine(served, delay))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


async def test_external_deployments_are_checked_concurrently_each_at_its_interval_with_the_api_key(
    setup: Setup, systemd: Systemd, engines: Callable[..., Engine], running: Callable[[Daemon], asyncio.Task[int]]
) -> None:
    hung, quick, calm = engines("hung", delay=5.0), engines("quick"), engines("calm")
    external = 'model = "org/m"\nmode = "external"\nurl = "{}"\n[health]\nchecks = ["models"]\n'
    setup.write("hung", external.format(hung.url) + "interval = 0.2\ntimeout = 2\n")
    setup.write("quick", external.format(quick.url) + "interval = 0.2\n")
    setup.write("calm", external.format(calm.url) + "interval = 2\n")
    daemon = Daemon(setup.config_dir, True, FakeUnitManager(), notifier=Notifier(str(systemd.path)))
    running(daemon)
    rows: dict[str, dict] = {}

    async def hung_timed_out() -> bool:
        rows.update({row["name"]: row for row in await daemon.statuses()})
        return rows.get("hung", {}).get("state") == "unhealthy"

    deadline = time.monotonic() + 20
    while not await hung_timed_out():
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.05)
    assert "timed out" in rows["hung"]["reason"]
    await wait_until("a second check of calm", lambda: len(calm.requests) >= 2, timeout=20)
    # While the first check of "hung" waited its 2 s for the timeout, "quick" went on being
    # checked: the checks run side by side, not one after another.
    first_hung = hung.requests[0][0]
    during = [when for when, _, _ in quick.requests if first_hung < when < first_hung + 2.0]
    assert len(during) >= 2, (first_hung, quick.requests)
    # Each at its own interval (lower bounds only: a loaded machine may check later, never sooner).
    quick_gaps = [b[0] - a[0] for a, b in zip(quick.requests, quick.requests[1:], strict=False)]
    assert min(quick_gaps) >= 0.15, quick_gaps
    assert calm.requests[1][0] - calm.requests[0][0] >= 1.8, calm.requests
    for engine in (hung, quick, calm):
        assert {auth for _, _, auth in engine.requests} == {"Bearer sekrit"}
    rows = {row["name"]: row for row in await daemon.statuses()}
    assert rows["quick"]["state"] == "ready" and rows["calm"]["state"] == "ready"


class ShruggingWatch:
    """A watch whose wait shrugs off the first cancellation, as python-sdbus's does on Python
    3.11 when a signal arrives just as it is cancelled (asyncio.wait_for's race)."""

    def __init__(self) -> None:
        self.shrugged = False

    def __aiter__(self) -> ShruggingWatch:
        return self

    async def __anext__(self) -> object:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if self.shrugged:
                raise
            self.shrugged = True
        await asyncio.sleep(3600)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        pass


class ShruggingUnits(FakeUnitManager):
    def __init__(self) -> None:
        super().__init__()
        self.shrugging = ShruggingWatch()

    def watch(self, patterns: object = ()) -> ShruggingWatch:  # type: ignore[override]
        return self.shrugging


async def test_the_daemon_stops_even_when_its_watch_shrugs_off_a_cancellation(setup: Setup, systemd: Systemd) -> None:
    units = ShruggingUnits()
    daemon = Daemon(setup.config_dir, True, units, notifier=Notifier(str(systemd.path)))
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run(stop))
    await wait_until("READY=1", systemd.ready)
    stop.set()
    assert await asyncio.wait_for(run, 10) == 0
    assert units.shrugging.shrugged and not setup.socket.exists()
