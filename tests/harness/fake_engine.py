"""Run the fake vLLM engine (agent/testing/fake_vllm/) as a real process, and look at processes in /proc.

One implementation for every test that needs the engine: ``Fake`` starts it on a loopback port
the kernel chose (see ports.py) in its own process group, waits for it failing fast (with its
output) when it died, and ``cleanup()`` kills it together with its ``VLLM::EngineCore`` child.
Fixtures built on it live in tests/unit/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from vllm_agent.testing.engine import SCRIPT as ENGINE_SCRIPT

from .ports import PortLease

SCRIPT = ENGINE_SCRIPT  # the one copy, shipped in the package for plugin authors
ENGINE_NAME = "VLLM::EngineCore"  # argv[0] of the engine child, set at exec
ENGINE_COMM = ENGINE_NAME[:15]  # /proc/PID/comm keeps 15 characters, set later by prctl

T = TypeVar("T")


# -- processes, from /proc -----------------------------------------------------------------------


def proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat, None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """Running, not gone and not a zombie."""
    return proc_state(pid) not in (None, "Z", "X")


def comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def is_engine_core(pid: int) -> bool:
    """Alive and a fake's EngineCore: by its name (comm), or by argv[0] before it has named itself."""
    if not alive(pid):
        return False
    if comm(pid) == ENGINE_COMM:
        return True
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0] == ENGINE_NAME.encode()
    except OSError:
        return False


def wait_until(predicate: Callable[[], T], timeout: float, what: str, step: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something true, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


# -- the engine ----------------------------------------------------------------------------------


class Fake:
    """One fake engine process on a loopback port leased from the kernel, output in files (a pipe
    could be held open by the EngineCore child after the server died). A context manager: ``cleanup()`` at exit."""

    def __init__(
        self,
        workdir: Path,
        *args: str,
        load_time: float = 0.2,
        env: dict | None = None,
        port: int | None = None,
        argv0: list[str] | None = None,
    ):
        # The kernel's port, held until cleanup: the fake binds beside the lease (SO_REUSEADDR).
        self._lease = PortLease() if port is None else None
        self.port = port if port is not None else self._lease.port
        self.base = f"http://127.0.0.1:{self.port}"
        tag = f"{self.port}-{time.monotonic_ns()}"
        self.stdout_path = workdir / f"fake-{tag}.out"
        self.stderr_path = workdir / f"fake-{tag}.err"
        self.pid_file = workdir / f"engine-{tag}.pid"
        cmd = [
            *(argv0 or [sys.executable, str(SCRIPT)]),
            "serve",
            "--model",
            "/models/tiny",
            "--served-model-name",
            "tiny",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--fake-load-time",
            str(load_time),
            "--fake-engine-pid-file",
            str(self.pid_file),
            *args,
        ]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_VLLM_")}
        full_env.update(env or {})
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # Its own process group: cleanup reaches the EngineCore even before its pid file exists.
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env, start_new_session=True
            )
        self._engine_pid: int | None = None

    def __enter__(self) -> Fake:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # -- looking at it --------------------------------------------------------------------------

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"

    def engine_pid(self, timeout: float = 5.0) -> int:
        if self._engine_pid is None:

            def read() -> int | None:
                if self.proc.poll() is not None and not self.pid_file.exists():
                    raise AssertionError(f"fake exited ({self.proc.returncode}) without an engine pid\n{self.output()}")
                try:
                    return int(self.pid_file.read_text())
                except (FileNotFoundError, ValueError):
                    return None

            self._engine_pid = wait_until(read, timeout, "the EngineCore pid file")
        return self._engine_pid

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=kw.pop("timeout", 5), **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return httpx.post(self.base + path, json=body, timeout=kw.pop("timeout", 5), **kw)

    def wait_for(self, ready: Callable[[httpx.Response], bool], path: str = "/health", timeout: float = 10.0) -> None:
        """Poll GET ``path`` until ``ready(response)``; fail at once, with the output, if the
        server exited meanwhile, and after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"fake exited with {self.proc.returncode} before {path} was ready\n{self.output()}"
                )
            try:
                if ready(self.get(path, timeout=2)):
                    return
            except httpx.TransportError:
                pass  # not listening yet, or too slow to answer
            if time.monotonic() > deadline:
                raise AssertionError(f"fake not ready on {path} after {timeout}s\n{self.output()}")
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until /health answers 200."""
        self.wait_for(lambda response: response.status_code == 200, "/health", timeout)

    def wait_exit(self, timeout: float = 5.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"fake still running after {timeout}s\n{self.output()}") from None

    # -- cleaning up ----------------------------------------------------------------------------

    def cleanup(self) -> None:
        """SIGKILL the whole process group and reap the server; then make sure the EngineCore is
        gone too (it outlives its server, as real vLLM's does). Safe to call more than once."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        pid = self._engine_pid
        if pid is None:
            try:
                pid = int(self.pid_file.read_text())
            except (FileNotFoundError, ValueError):
                pid = None
        if pid is not None and is_engine_core(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pid is not None:
            # Orphaned, it is no child of ours: wait until it is gone (or a zombie of PID 1).
            wait_until(lambda: not alive(pid), 5, f"EngineCore {pid} to die")
        if self._lease is not None:
            self._lease.release()


@contextlib.contextmanager
def running_engine(workdir: Path, *args: str, load_time: float = 0.1, **kw: Any) -> Iterator[Fake]:
    """A ready fake engine (a real process on a free port): /health answers 200 and its EngineCore
    has named itself. Killed, with its EngineCore, at exit. ``args`` and ``kw`` as for ``Fake``."""
    with Fake(workdir, *args, load_time=load_time, **kw) as fake:
        fake.wait_ready()  # fails fast, with its output, if it died
        wait_until(lambda: comm(fake.engine_pid()) == ENGINE_COMM, 5, "EngineCore to name itself")
        yield fake
