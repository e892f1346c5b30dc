"""`vllm-agent status` when the daemon cannot answer for every deployment: systemd's view and
the launcher's state, read directly.

It imports only that: no lifecycle, plugins or placement logic, and no pydantic for unchanged
files (config/validated.py); the units are asked in parallel. The daemon's answer, where there is
one, comes first (cli/status_fast.py answers alone when it covers everything).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..config.desired import DesiredStates
from ..config.directory import Config, load_config
from ..config.names import check_name, unit_name
from ..config.schema import MODELS_DIR
from ..daemon.api import ask as ask_daemon
from ..deployments.state import StateStore
from ..deployments.status import DeploymentStatus, one_line, read_status
from ..deployments.statusline import exit_status
from ..gpu.records import PlacementRecords
from ..systemd.model import UnitManager

Connect = Callable[[bool], Awaitable[UnitManager]]


def warn_silent(config: Config, why: str, then: str) -> None:
    print(f"warning: the agent daemon on {config.socket} {why}; {then}", file=sys.stderr)


def daemon_rows(body: bytes | None) -> dict[str, dict[str, Any]] | None:
    try:
        return {row["name"]: row for row in json.loads(body)["deployments"]}
    except (ValueError, KeyError, TypeError):
        return None


async def status(config_dir: Path, user: bool, connect: Connect, *, name: str | None, as_json: bool) -> int:
    problems: list[str] = []
    config = load_config(config_dir, user=user, problems=problems)
    if name is not None:
        check_name(name)
        config.deployment(name)
    names = [name] if name else sorted(config.deployments)
    # The daemon knows more (transitions, health, tests); without it, systemd says enough.
    reply = await ask_daemon(config.socket)
    rows_by_name = daemon_rows(reply.body)
    silent = reply.silent
    if reply.body is not None and rows_by_name is None:
        silent = "answered with something other than its status JSON"
    if silent:
        warn_silent(config, silent, "reading systemd directly")
    extras = rows_by_name or {}
    missing = [item for item in names if item not in extras]  # newer than the daemon's config
    found = await _from_systemd(config, connect, missing) if missing else {}
    rows = [found[item] if item in found else DeploymentStatus.from_json(extras[item]) for item in names]
    if as_json:
        json.dump(
            {
                "deployments": [extras.get(row.name, {}) | row.as_json() for row in rows],
                "problems": problems,
                "source": "daemon" if rows_by_name is not None else "systemd",
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
        if not rows:
            print(f"no deployments in {config_dir / MODELS_DIR}")
        for row in rows:
            print(one_line(row))
    return exit_status([row.as_json() for row in rows])


async def _from_systemd(config: Config, connect: Connect, names: list[str]) -> dict[str, DeploymentStatus]:
    units = await connect(config.user)
    try:
        states = await asyncio.gather(*(units.get_state(unit_name(item)) for item in names))
    finally:
        await units.close()
    store = StateStore(config.state_dir)
    desired = DesiredStates(config.state_dir, config.unit_dir, user=config.user)
    placed = PlacementRecords(config.state_dir).all()  # one read for every deployment
    return {
        item: read_status(config, config.deployments[item], unit, store.load(item), desired.get(item), placed)
        for item, unit in zip(names, states, strict=True)
    }
