"""The engine as a child process: its output forwarded, its last lines kept, its group killed."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence

# What the engine must not inherit from the launcher: systemd talks to the launcher only.
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


class EngineProcess:
    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None, tail: int = 60) -> None:
        self.argv = list(argv)
        self.env = {k: v for k, v in (env if env is not None else os.environ).items() if k not in _PRIVATE_ENV}
        self.tail: collections.deque[str] = collections.deque(maxlen=tail)
        self.last_output = time.monotonic()
        self.lines_seen = 0
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self._process.pid if self._process else 0

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    async def start(self) -> None:
        # Its own process group, so a stop reaches the engine's helpers (VLLM::EngineCore) too.
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            limit=1 << 20,
        )
        self.last_output = time.monotonic()
        self._pump = asyncio.create_task(self._forward(), name="engine-output")

    async def _forward(self) -> None:
        assert self._process and self._process.stdout
        out = sys.stdout.buffer
        while line := await self._process.stdout.readline():
            self.last_output = time.monotonic()
            self.lines_seen += 1
            self.tail.append(line.decode(errors="replace").rstrip())
            out.write(line)
            out.flush()

    async def wait(self) -> int:
        """The engine's exit status, as soon as it exits.

        Not Process.wait(): asyncio waits there until the stdout pipe closes too, and the
        engine's helpers (VLLM::EngineCore) keep it open after the engine itself died.
        """
        process = self._process
        assert process
        try:
            pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel), or already reaped
            pidfd = None
        if pidfd is not None:
            loop = asyncio.get_running_loop()
            exited = loop.create_future()
            loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        # asyncio's child watcher reaps it and sets returncode a moment later.
        while process.returncode is None:
            await asyncio.sleep(0.01)
        return process.returncode

    async def stop(self, timeout: float) -> int | None:
        """SIGTERM the group, wait up to ``timeout``, then SIGKILL whatever is left of it."""
        if not self._process:
            return None
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._process.wait(), timeout)
        except TimeoutError:
            pass
        code = await self._process.wait()
        await self.kill_leftovers()
        return code

    async def kill_leftovers(self) -> None:
        """After the engine itself ended: its helpers must not outlive it (they hold the GPU).

        Then read what is left of its output: the pipe closes once the last writer is gone.
        """
        self._signal_group(signal.SIGKILL)
        if self._pump:
            try:
                await asyncio.wait_for(asyncio.shield(self._pump), 2.0)
            except TimeoutError:
                self._pump.cancel()
                await asyncio.gather(self._pump, return_exceptions=True)

    def _signal_group(self, sig: int) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
