"""The engine child process: its output pump and its stop, against real processes."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.fake_engine import SCRIPT, alive, wait_until
from harness.ports import PortLease
from vllm_agent.unit.engine_process import MAX_LINE, EngineProcess


@pytest.fixture
def port() -> Iterator[int]:
    """The kernel's port, held beside the fake's own bind until the test ends."""
    with PortLease() as lease:
        yield lease.port


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def poll(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_carriage_return_progress_is_output_and_forwarded_line_by_line() -> None:
    # tqdm's bar (vLLM's shard loading) redraws itself after a \r, with no \n until it is done.
    bar = (
        "import sys, time\nfor i in range(1, 31):\n"
        "    sys.stdout.write(f'\\rshards {i}%'); sys.stdout.flush(); time.sleep(0.02)\ntime.sleep(60)\n"
    )
    out = io.BytesIO()
    engine = EngineProcess(python(bar), output=out)
    await engine.start()
    try:
        spawned = engine.last_output
        # The 30% update is the bar's current state: a line once the next \r (or \n) ends it.
        await poll(lambda: "shards 29%" in engine.tail, 10, "the 29% update, with no newline ever written")
        assert engine.last_output > spawned  # the stall detector sees the bar move
        assert out.getvalue() == b"".join(b"shards %d%%\n" % i for i in range(1, 30))
    finally:
        await engine.stop(5)


async def test_a_line_over_a_mebibyte_is_cut_and_forwarded_and_the_pipe_drained() -> None:
    size = 3 * MAX_LINE + 5
    code = f"import sys\nsys.stdout.write('x' * {size})\nsys.stdout.write('\\nafter\\n')\n"
    out = io.BytesIO()
    engine = EngineProcess(python(code), output=out)
    await engine.start()
    # Before the fix the pump died on the first long line and the engine blocked on a full pipe.
    assert await asyncio.wait_for(engine.wait(), 20) == 0
    await engine.kill_leftovers()  # reads the rest of the pipe
    lines = out.getvalue().split(b"\n")
    assert lines[-2:] == [b"after", b""]
    pieces = lines[:-2]
    assert all(set(piece) == {ord("x")} and len(piece) <= MAX_LINE for piece in pieces)
    assert sum(map(len, pieces)) == size
    assert engine.tail[-1] == "after"


async def test_stop_sigkills_an_engine_that_ignores_sigterm_after_its_timeout(tmp_path: Path, port: int) -> None:
    pid_file = tmp_path / "core.pid"
    argv = [sys.executable, str(SCRIPT), "--port", str(port), "--fake-load-time", "60"]
    argv += ["--fake-mode", "ignore-sigterm", "--fake-engine-pid-file", str(pid_file)]
    engine = EngineProcess(argv, output=io.BytesIO())
    await engine.start()
    try:
        await poll(pid_file.exists, 10, "the EngineCore to start")
        await poll(lambda: any("Starting to load model" in line for line in engine.tail), 10, "the engine to load")
        core = int(pid_file.read_text())
        started = time.monotonic()
        code = await asyncio.wait_for(engine.stop(1.0), 20)  # before the fix: never returned
        assert code == -9
        assert time.monotonic() - started >= 1.0  # it had its timeout first
        assert any("ignoring SIGTERM" in line for line in engine.tail)
        wait_until(lambda: not alive(core), 5, "the EngineCore, which ignores SIGTERM too, to be killed")
    finally:
        await engine.kill_leftovers()


async def test_stop_of_a_cooperative_engine_returns_its_own_status(tmp_path: Path, port: int) -> None:
    argv = [sys.executable, str(SCRIPT), "--port", str(port), "--fake-load-time", "60"]
    engine = EngineProcess(argv, output=io.BytesIO())
    await engine.start()
    await poll(lambda: any("Starting to load model" in line for line in engine.tail), 10, "the engine to load")
    assert await asyncio.wait_for(engine.stop(10), 20) == 0
    assert any("Application shutdown complete" in line for line in engine.tail)
