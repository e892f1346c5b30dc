"""Validated configuration, kept: a file validated once is not validated again until it changes.

Validation imports pydantic and builds its validators (about 100 ms and 8 MB). The launcher of
every unit, `status` and each CLI call would pay that for files that did not change; here the
result of a validation is kept in STATE_DIR/validated/, keyed by a digest of the exact bytes it
came from (the deployment's file, agent.toml whose defaults it inherits, the config directory,
the scope and the vllm-agent version). An entry whose key does not match is never used: an
edited file is validated again, so nothing reads a stale value.

Only entries written by this user or by root, and writable by no one else, are trusted: the
daemon runs as root and renders unit files from these values, so a file an engine's user could
forge must not reach it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from .. import __version__
from ..fsutil import write_atomic

DIRECTORY = "validated"


class ValidatedStore:
    def __init__(self, state_dir: Path, config_dir: Path, user: bool, agent_toml: bytes) -> None:
        self.directory = state_dir / DIRECTORY
        salt = "\0".join((__version__, "user" if user else "system", os.path.abspath(config_dir)))
        self._salt = hashlib.sha256(salt.encode() + b"\0" + agent_toml).digest()

    def key(self, source: bytes) -> str:
        return hashlib.sha256(self._salt + source).hexdigest()

    def get(self, label: str, source: bytes) -> dict[str, Any] | None:
        """The value validated from exactly ``source`` under ``label`` (agent.toml,
        models.d/NAME.toml), or None."""
        path = self.directory / f"{label}.json"
        try:
            with path.open("rb") as handle:
                if not (_trusted(os.fstat(handle.fileno())) and _trusted(path.parent.stat())):
                    return None
                entry = json.load(handle)
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != self.key(source):
            return None
        value = entry.get("value")
        return value if isinstance(value, dict) else None

    def put(self, label: str, source: bytes, value: dict[str, Any]) -> None:
        """Keep a value; a state directory that refuses the write only costs the next reader time."""
        path = self.directory / f"{label}.json"
        try:
            # Never group-writable, whatever the umask: the reader would not trust it.
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_atomic(path, json.dumps({"key": self.key(source), "value": value}), mode=0o644)
        except OSError:
            pass


def _trusted(info: os.stat_result) -> bool:
    return info.st_uid in (0, os.geteuid()) and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
