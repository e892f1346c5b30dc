"""Run the fake vLLM server (the fake_vllm package, next to this file) as a child process, for tests.

It serves the OpenAI endpoints, /health and /metrics like vLLM does (see fake_vllm/__init__.py
for its modes: a dying engine, a hung one, a slow load).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..plugin_api import EngineTarget

SCRIPT = Path(__file__).resolve().parent / "fake_vllm"  # a package directory: `python DIR` runs it


def free_port() -> int:
    # A port the kernel just handed out; another process could take it before the engine binds
    # it, which is rare on a test host. The project's own tests lease ports instead.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeEngine:
    """One fake vLLM server; ``target`` reaches it. Use as a context manager, or ``stop()``."""

    def __init__(self, *args: str, name: str = "m", port: int | None = None, timeout: float = 60.0) -> None:
        self.port = port or free_port()
        self.target = EngineTarget(deployment=name, url=f"http://127.0.0.1:{self.port}", served_model_name=name)
        self._log = tempfile.TemporaryFile()
        argv = [sys.executable, str(SCRIPT), "--model", name, "--served-model-name", name]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:  # fail fast: it will never answer
                raise RuntimeError(f"the fake engine exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.target.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the fake engine was not healthy within {timeout:g}s:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM (the server stops its EngineCore child too); after 10 s, SIGKILL to the whole
        process group, since an EngineCore outlives a SIGKILLed server, as vLLM's does."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        else:  # it died on its own: its EngineCore may still be there
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
