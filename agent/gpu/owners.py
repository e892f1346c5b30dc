"""Whose is a process on a GPU: a deployment's (its cgroup is vllm@NAME.service) or foreign."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..config.names import name_from_unit

_UNIT = re.compile(r"/(vllm@[^/]+\.service)(?:/|$)")
COMMAND_LIMIT = 120


@dataclass(frozen=True)
class ProcessOwner:
    pid: int
    deployment: str | None  # None: not a deployment's process (foreign)
    command: str  # "?" when the process is gone or hidden (another PID namespace)


def owner_of(pid: int, proc: Path = Path("/proc")) -> ProcessOwner:
    """Read /proc/PID/cgroup (v1 and v2 lines alike) and /proc/PID/cmdline."""
    base = proc / str(pid)
    try:
        cgroups = (base / "cgroup").read_text()
    except OSError:
        return ProcessOwner(pid, None, "?")
    deployment = None
    for line in cgroups.splitlines():
        match = _UNIT.search(line.split(":", 2)[-1])
        if match and (name := name_from_unit(match.group(1))):
            deployment = name
            break
    return ProcessOwner(pid, deployment, _command(base))


def _command(base: Path) -> str:
    try:
        argv = (base / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    text = " ".join(part.decode("utf-8", "replace") for part in argv).strip()
    if not text:  # kernel threads and zombies have no cmdline
        try:
            text = f"[{(base / 'comm').read_text().strip()}]"
        except OSError:
            return "?"
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= COMMAND_LIMIT else text[: COMMAND_LIMIT - 3] + "..."
