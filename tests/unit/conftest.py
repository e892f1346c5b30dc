"""Fixtures for unit tests: the fake vLLM engine (agent/testing/fake_vllm/), and a tiny tmpfs.

Each engine is a real process on a free loopback port, in its own process group, with its output
in files under the test's tmp_path; each is killed, with its EngineCore child, after the test (see
tests/harness/fake_engine.py). One engine per test: the settle check fails a test that leaves
children behind. The tmpfs gives real ENOSPC and EROFS (tests/harness/tmpfs.py).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness.ci import missing
from harness.fake_engine import Fake, running_engine
from harness.tmpfs import TinyTmpfs, tmpfs_unavailable


@pytest.fixture
def start_fake(tmp_path: Path) -> Iterator[Callable[..., Fake]]:
    """Start fake engines, not waited for: ``start_fake(*args, **kw)`` takes what ``Fake`` takes."""
    with contextlib.ExitStack() as stack:
        yield lambda *args, **kw: stack.enter_context(Fake(tmp_path, *args, **kw))


@pytest.fixture
def ready_fake(start_fake: Callable[..., Fake]) -> Fake:
    """A healthy engine serving ``tiny`` with a max_model_len of 128."""
    fake = start_fake("--max-model-len", "128", load_time=0.05)
    fake.wait_ready()
    return fake


@pytest.fixture
def start_fake_in_mode(start_fake: Callable[..., Fake]) -> Callable[..., Fake]:
    """``start_fake_in_mode(mode="ok", status=200)``: an engine in a ``--fake-mode``, loaded at
    once, started and waited for until /health answers ``status``."""

    def start(mode: str = "ok", status: int = 200) -> Fake:
        fake = start_fake("--fake-mode", mode, load_time=0)
        fake.wait_for(lambda response: response.status_code == status)
        return fake

    return start


@pytest.fixture
def start_engine(tmp_path: Path) -> Iterator[Callable[..., Fake]]:
    """Start ready engines (see ``running_engine``): ``start_engine("--fake-mode", "hang-after:0")``."""
    with contextlib.ExitStack() as stack:
        yield lambda *args, **kw: stack.enter_context(running_engine(tmp_path, *args, **kw))


@pytest.fixture
def engine(start_engine: Callable[..., Fake]) -> Fake:
    """One ready engine with the defaults."""
    return start_engine()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process outside any vllm@ unit: on a GPU it is a foreign process."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[TinyTmpfs]:
    """A 64 KiB tmpfs under tmp_path: a disk that really runs full (ENOSPC) or goes read-only
    (EROFS). Needs root; skipped with the reason elsewhere, a failure under CI."""
    disk = TinyTmpfs(tmp_path / "tiny")
    reason = tmpfs_unavailable() or disk.mount()
    if reason:
        missing(f"a tmpfs: {reason}")
    try:
        yield disk
    finally:
        disk.unmount()
