"""`vllm-agent doctor [NAME]`: what is wrong on this host and with each deployment, and what to do.

Each finding is ok, warn or fail with a hint; the exit status is the worst (0, 1, 2). Every probe
runs under a timeout, and blocking ones (GPU libraries, socket tables, subprocesses) in daemon
threads of their own, so a wedged engine, D-Bus or driver gives a finding, never a hang. What
doctor talks to (systemd, HTTP, the clock, commands) is injected through ``Probes``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import httpx

    from ..config.directory import Config
    from ..pluginhost.manager import Plugins
    from ..systemd.model import UnitManager

Level = Literal["ok", "warn", "fail"]
EXIT = {"ok": 0, "warn": 1, "fail": 2}
T = TypeVar("T")

PROBE_TIMEOUT = 10.0  # seconds for one probe: a D-Bus call, an HTTP request, a library call


@dataclass(frozen=True)
class Finding:
    scope: str  # "host", or the deployment's name
    check: str  # a short key: "engine", "systemd", "port", "health", ...
    level: Level
    text: str
    hint: str = ""
    kind: str = ""  # for a classified failure: its class in agent/doctor/diagnose.py

    def line(self) -> str:
        hint = f"  hint: {self.hint}" if self.hint and self.level != "ok" else ""
        return f"{self.level:<4}  {self.check:<12} {self.text}{hint}"


@dataclass
class Probes:
    """What doctor reaches out to; tests hand in fakes with the same interfaces."""

    connect: Callable[[bool], Awaitable[UnitManager]]
    http: Callable[[], httpx.AsyncClient]
    run: Callable[[Sequence[str], float], tuple[int, str]]  # argv, timeout -> (status, output)
    clock: Callable[[], float] = time.monotonic
    timeout: float = PROBE_TIMEOUT
    extra: dict[str, Any] = field(default_factory=dict)  # injectable overrides by name (port_holder, ...)

    def get(self, name: str, default: T) -> T:
        return self.extra.get(name, default)


class ProbeTimeout(Exception):
    pass


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """The awaitable's result, or ProbeTimeout after ``seconds``."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise ProbeTimeout(f"no answer within {seconds:g}s") from None


async def off_loop(function: Callable[..., T], *args: Any, seconds: float) -> T:
    """Run a blocking call in a daemon thread of its own: a hung library keeps that thread, never
    the loop, and never the interpreter's exit (the default executor would be waited for)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(*args), None
        except BaseException as err:  # handed to the loop, raised there
            result, error = None, err
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop closed while this hung: nobody waits any more

    threading.Thread(target=run, name=f"doctor-{getattr(function, '__name__', 'probe')}", daemon=True).start()
    return await bounded(asyncio.shield(future), seconds)


async def examine(config: Config, plugins: Plugins, probes: Probes, name: str | None = None) -> list[Finding]:
    """Every finding for the host and for ``name`` (or every deployment)."""
    from .deployment import deployment_findings
    from .host import host_findings

    names = [name] if name else sorted(config.deployments)
    findings, units, devices = await host_findings(config, plugins, probes, names)
    try:
        for item in names:
            findings += await deployment_findings(config, plugins, probes, units, item, devices)
    finally:
        if units is not None:
            try:
                await bounded(units.close(), probes.timeout)
            except Exception:
                pass  # closing a connection that went bad: nothing left to tell
    return findings


def worst(findings: Sequence[Finding]) -> int:
    return max((EXIT[finding.level] for finding in findings), default=0)


def report(findings: Sequence[Finding], *, as_json: bool, out: Any = None) -> int:
    out = out or sys.stdout
    code = worst(findings)
    if as_json:
        body = {"ok": code == 0, "exit": code, "findings": [asdict(finding) for finding in findings]}
        json.dump(body, out, indent=2)
        out.write("\n")
        return code
    scope = None
    for finding in findings:
        if finding.scope != scope:
            scope = finding.scope
            out.write("host\n" if scope == "host" else f"\ndeployment {scope}\n")
        out.write(f"  {finding.line()}\n")
    counts = {level: sum(f.level == level for f in findings) for level in EXIT}
    out.write(f"\n{counts['fail']} failed, {counts['warn']} warnings, {counts['ok']} ok\n")
    return code


def default_probes(timeout: float = PROBE_TIMEOUT) -> Probes:
    import subprocess

    import httpx

    from ..systemd import connect

    def run(argv: Sequence[str], seconds: float) -> tuple[int, str]:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=seconds, stdin=subprocess.DEVNULL)
        return done.returncode, (done.stdout + done.stderr).strip()

    return Probes(connect=connect, http=lambda: httpx.AsyncClient(timeout=timeout), run=run, timeout=timeout)


async def doctor(
    config: Config, plugins: Plugins, name: str | None, *, as_json: bool, probes: Probes, problems: Sequence[str] = ()
) -> int:
    """``problems``: what loading the config directory found (each a "file: key: what" line)."""
    if name is not None:
        config.deployment(name)  # DeploymentNotFound with its hint
    mine = [p for p in problems if name is None or p.startswith(("agent.toml", f"models.d/{name}.toml"))]
    findings = [
        Finding("host", "config", "fail", problem, "fix it; 'vllm-agent validate' lists every problem")
        for problem in mine
    ]
    findings += await examine(config, plugins, probes, name)
    return report(findings, as_json=as_json)
