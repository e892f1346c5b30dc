"""`vllm-agent status` straight from the daemon's API: no pydantic, D-Bus or plugins, so it
answers in tens of milliseconds. Anything unusual returns None and the full path takes over."""

from __future__ import annotations

import json
import socket
import sys
import tomllib
from pathlib import Path
from typing import Any

from .names import NAME_RE
from .paths import default_socket
from .statusline import exit_status, one_line


def daemon_status(config_dir: Path, user: bool, name: str | None, *, as_json: bool) -> int | None:
    try:
        with (config_dir / "agent.toml").open("rb") as handle:
            configured = tomllib.load(handle).get("socket")
    except FileNotFoundError:
        configured = None
    except (OSError, tomllib.TOMLDecodeError):
        return None  # the full path reports the file's problem
    if configured is not None and not isinstance(configured, str):
        return None
    body = _get(Path(configured) if configured else default_socket(user))
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


def _get(path: Path, timeout: float = 2.0) -> bytes | None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(str(path))
            client.sendall(b"GET /v1/status HTTP/1.1\r\nHost: vllm-agent\r\nContent-Length: 0\r\n\r\n")
            chunks = []
            while chunk := client.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return body if head.startswith(b"HTTP/1.1 200") else None
