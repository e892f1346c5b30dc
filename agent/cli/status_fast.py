"""`vllm-agent status` straight from the daemon's API: no pydantic, D-Bus or plugins, so it
answers in tens of milliseconds. Anything unusual returns None and the full path takes over; a
daemon that does not answer within a second is remembered, so the full path does not wait again."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..config.names import NAME_RE
from ..config.paths import default_socket
from ..daemon.api_client import call
from ..deployments.statusline import exit_status, one_line


def daemon_status(config_dir: Path, user: bool, name: str | None, *, as_json: bool) -> int | None:
    try:
        agent_toml = (config_dir / "agent.toml").read_bytes()
    except FileNotFoundError:
        agent_toml = b""
    except OSError:
        return None  # the full path reports the file's problem
    configured = None
    if b"socket" in agent_toml:  # else the key is not set, and parsing TOML costs 4 ms
        import tomllib

        try:
            configured = tomllib.loads(agent_toml.decode()).get("socket")
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None
    if configured is not None and not isinstance(configured, str):
        return None
    body = call(Path(configured) if configured else default_socket(user)).body
    if body is None:
        return None
    try:
        rows: list[dict[str, Any]] = json.loads(body)["deployments"]
    except (ValueError, KeyError, TypeError):
        return None
    files = {path.stem for path in (config_dir / "models.d").glob("*.toml") if NAME_RE.fullmatch(path.stem)}
    wanted = {name} if name else files
    known = {row.get("name") for row in rows}
    if not wanted <= known:
        return None  # newer files than the daemon's config: let the full path read systemd
    rows = [row for row in rows if row.get("name") in wanted]
    if as_json:
        json.dump({"deployments": rows, "problems": [], "source": "daemon"}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for row in rows:
            print(one_line(row))
    return exit_status(rows)
