"""The engine as a child process: its output forwarded, its last lines kept, its group killed."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import BinaryIO

# What the engine must not inherit from the launcher: systemd talks to the launcher only.
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
MAX_LINE = 1 << 20  # a line longer than this (no newline yet) is cut and forwarded in pieces
TAIL_LINE = 8192  # characters of each line kept for the diagnosis: the end, where errors are
READ_SIZE = 1 << 16
KILL_WAIT = 2.0  # seconds for a SIGKILLed engine to be gone before stop() gives up on it
# A line ends at \n or \r: tqdm's bars (vLLM's shard loading) rewrite themselves with \r only.
_LINE_END = re.compile(rb"[\r\n]")


class EngineProcess:
    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        tail: int = 60,
        output: BinaryIO | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = {k: v for k, v in (env if env is not None else os.environ).items() if k not in _PRIVATE_ENV}
        self.tail: collections.deque[str] = collections.deque(maxlen=tail)
        self.output = output if output is not None else sys.stdout.buffer
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
        """Spawn the engine; OSError (FileNotFoundError, PermissionError) when it cannot be run."""
        # Its own process group, so a stop reaches the engine's helpers (VLLM::EngineCore) too.
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self.last_output = time.monotonic()
        self._pump = asyncio.create_task(self._forward(), name="engine-output")

    async def _forward(self) -> None:
        """Read the pipe until its end, whatever comes: an engine blocked on a full pipe would
        look stalled, so nothing here may stop reading."""
        assert self._process and self._process.stdout
        stdout = self._process.stdout
        pending = b""
        while chunk := await stdout.read(READ_SIZE):
            self.last_output = time.monotonic()  # any bytes are progress, a bare \r too
            pieces = _LINE_END.split(chunk)
            pieces[0] = pending + pieces[0]
            pending = pieces.pop()
            for piece in pieces:
                self._line(piece)
            while len(pending) >= MAX_LINE:  # no line end in sight: forward it in pieces
                self._line(pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
        self._line(pending)

    def _line(self, raw: bytes) -> None:
        """Forward one line, cut into pieces of at most MAX_LINE bytes."""
        for start in range(0, len(raw), MAX_LINE):  # none for b"": between \r and \n
            self._piece(raw[start : start + MAX_LINE])

    def _piece(self, raw: bytes) -> None:
        self.lines_seen += 1
        self.tail.append(raw.decode(errors="replace").rstrip()[-TAIL_LINE:])
        # One line per progress update: journald and log files show a \r-only bar as it moves.
        try:
            self.output.write(raw + b"\n")
            self.output.flush()
        except (OSError, ValueError):
            pass  # the log went away; keep draining the pipe regardless

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
        """SIGTERM the group, wait up to ``timeout``, then SIGKILL it: bounded, so a stop ends
        before systemd's TimeoutStopSec and is recorded. None if it never exited (stuck in the
        kernel); the unit's cgroup kill is the last resort then."""
        if not self._process:
            return None
        code: int | None = self._process.returncode
        if code is None:
            self._signal_group(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(self.wait(), timeout)
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
                try:
                    code = await asyncio.wait_for(self.wait(), KILL_WAIT)
                except TimeoutError:
                    code = None
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
