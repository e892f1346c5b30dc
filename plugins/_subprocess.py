"""What the ``script`` and ``pytest`` runners share: run a test program, keep its output's tail,
and never leave a process behind.

The program runs in its own session (so its own process group). When it exits, times out, or
the caller is cancelled (the launcher bounds every runner with ``asyncio.wait_for``), the whole
group is SIGKILLed and the program reaped before control returns, so a background ``sleep 100``
it started dies with it. A process that leaves the group on purpose (``setsid``) is beyond reach.

Also the options and path handling both runners use: ``path`` relative to CONFIG_DIR/tests.d,
``args`` a list of strings, ``api_key`` (true: the program gets the deployment's key as
VLLM_API_KEY; without it, it never sees the key), and the VLLM_AGENT_* environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vllm_agent.config.schema import TESTS_DIR
from vllm_agent.plugin_api import EngineTarget, TestContext, TestSpec

OUTPUT_CAP = 64 * 1024  # bytes of output kept: the tail
DRAIN_GRACE = 1.0  # seconds to wait for the pipe's end once the group is killed
REAP_GRACE = 2.0  # seconds to wait for the killed group's members to be gone
# What a test must not inherit from the launcher: systemd talks to the launcher only.
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Finished:
    """How a test program ended."""

    status: int | None  # exit status; -N for killed by signal N; None when it timed out
    output: str  # stdout and stderr interleaved, the last OUTPUT_CAP bytes, made printable
    duration: float  # seconds

    @property
    def timed_out(self) -> bool:
        return self.status is None

    @property
    def last_line(self) -> str:
        return last_line(self.output)


def last_line(output: str, limit: int = 300) -> str:
    """The last non-empty line of ``output``, stripped and cut to ``limit`` characters."""
    for line in reversed(output.splitlines()):
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def describe_status(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


class _Capture(asyncio.SubprocessProtocol):
    """Keeps the tail of the output; signals the pipe's end and the program's exit."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buffer = bytearray()
        self.dropped = 0
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.buffer += data
        excess = len(self.buffer) - self.cap
        if excess > 0:
            del self.buffer[:excess]
            self.dropped += excess

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.eof.done():
            self.eof.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def text(self) -> str:
        text = self.buffer.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        text = _CONTROL.sub("\ufffd", text)  # binary garbage must not reach the journal raw
        if self.dropped:
            text = f"[... {self.dropped} earlier bytes of output dropped]\n" + text
        return text


async def run_program(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    cwd: Path | None = None,
    cap: int = OUTPUT_CAP,
) -> Finished:
    """Run ``argv`` in a new session; SIGKILL its process group when it exits or after
    ``timeout`` seconds, and also when cancelled (then the group is reaped before the
    CancelledError goes on)."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    transport, capture = await loop.subprocess_exec(
        lambda: _Capture(cap),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    pgid = transport.get_pid()
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(capture.exited)
        except TimeoutError:
            timed_out = True
    finally:
        await _uninterruptible(_end(transport, capture, pgid))
    status = None if timed_out else transport.get_returncode()
    return Finished(status=status, output=capture.text(), duration=time.monotonic() - started)


async def _end(transport: asyncio.SubprocessTransport, capture: _Capture, pgid: int) -> None:
    """Kill the group, reap the leader, read what is left in the pipe, close it."""
    _kill_group(pgid)
    await capture.exited
    if _kill_group(pgid):  # what the leader started between the first kill and its death
        await _wait_until_dead(pgid)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_GRACE):  # a process outside the group may hold the pipe
            await asyncio.shield(capture.eof)
    transport.close()


def _kill_group(pgid: int) -> bool:
    """SIGKILL every process of the group; False when there was none."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _wait_until_dead(pgid: int, timeout: float = REAP_GRACE) -> None:
    """SIGKILL is delivered when the process next runs: wait until no member is still alive
    (orphans are reaped by PID 1 or a subreaper, not by us; a zombie counts as dead)."""
    deadline = time.monotonic() + timeout
    while _live_members(pgid) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _live_members(pgid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            found.append(int(entry.name))
    return found


async def _uninterruptible(coro) -> None:  # noqa: ANN001 - a coroutine
    """Finish ``coro`` even if this task is cancelled meanwhile; then let the cancellation go on."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


# Options and environment shared by the script and pytest runners -------------------------------


def resolve_path(option: str, context: TestContext) -> Path:
    """``path`` as configured: absolute, or relative to CONFIG_DIR/tests.d."""
    path = Path(option)
    return path if path.is_absolute() else context.config_dir / TESTS_DIR / path


def option_problems(spec: TestSpec, runner: str, known: Sequence[str]) -> list[str]:
    """Unknown options, a missing or non-string ``path``, ``args`` not a list of strings."""
    options = spec.options
    problems = [
        f"{key}: unknown option for runner {runner!r} (known: {', '.join(known)})"
        for key in sorted(options)
        if key not in known
    ]
    path = options.get("path")
    if path is None:
        problems.append("path: required")
    elif not isinstance(path, str) or not path:
        problems.append(f"path: must be a non-empty string, got {path!r}")
    args = options.get("args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        problems.append(f"args: must be a list of strings, got {args!r}")
    if not isinstance(options.get("api_key", False), bool):
        problems.append(f"api_key: must be true or false, got {options['api_key']!r}")
    return problems


def wants_api_key(spec: TestSpec) -> bool:
    """Whether the entry asked for the key (``api_key = true``): a test program is the
    operator's code, and the key goes only where it was asked for."""
    return spec.options.get("api_key") is True


def program_env(
    target: EngineTarget, base: Mapping[str, str] | None = None, *, api_key: bool = False
) -> dict[str, str]:
    """The agent's environment, less systemd's private variables, plus what a test needs;
    VLLM_API_KEY only with ``api_key``."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in PRIVATE_ENV}
    env.pop("VLLM_API_KEY", None)
    env.update(
        VLLM_AGENT_URL=target.url,
        VLLM_AGENT_MODEL=target.served_model_name,
        VLLM_AGENT_DEPLOYMENT=target.deployment,
    )
    if api_key and target.api_key:
        env["VLLM_API_KEY"] = target.api_key
    return env


def own_timeout(spec: TestSpec) -> float:
    """A little less than ``spec.timeout``, so the runner reports its own timeout (with the
    output) before the launcher's ``wait_for`` cancels it."""
    return max(spec.timeout - min(1.0, spec.timeout * 0.1), spec.timeout * 0.5)
