"""`vllm-agent logs`: the journal where there is one, else the unit's log file; the agent's
JSON lines rendered for a person (time, level, event, fields), or raw with --json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from ..config.directory import Config
from ..config.names import unit_name
from ..errors import AgentError

_PRIORITY = re.compile(r"^<[0-7]>")  # the syslog prefix journald reads; files keep it
_RELATIVE = re.compile(r"^-?(\d+)\s*(s|sec|m|min|h|hour|hours|d|day|days)(\s+ago)?$")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "hours": 3600, "d": 86400}
_UNITS |= {"day": 86400, "days": 86400}
_FIXED = ("timestamp", "level", "event", "deployment")


class BadSince(AgentError):
    code = "logs.bad_since"
    exit_code = 2  # bad input, as everywhere


def show_logs(
    config: Config, name: str, *, follow: bool, lines: int, since: str | None = None, raw: bool = False
) -> int:
    unit = unit_name(name)
    if config.settings.log_dir is not None:
        start = parse_since(since) if since else None
        return _tail_file(config.settings.log_dir / f"{name}.log", follow=follow, lines=lines, since=start, raw=raw)
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise AgentError(
            "no journalctl on this host and no log_dir in agent.toml",
            hint="set log_dir in agent.toml so units write their output to files",
        )
    argv = [journalctl, "--user-unit" if config.user else "--unit", unit, "-n", str(lines), "--no-pager", "-o", "cat"]
    if since:
        argv += ["--since", since]  # journalctl's own syntax ("10 min ago", "today", ...)
    if follow:
        argv.append("-f")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, errors="replace", bufsize=1) as journal:
        assert journal.stdout is not None
        try:
            _write(journal.stdout, raw=raw)
        except KeyboardInterrupt:
            journal.terminate()
        return journal.wait()


def render(line: str) -> str:
    """One line for a person: the agent's JSON as ``TIME LEVEL [deployment] event key=value``;
    anything else (the engine's own output) as it came, without a syslog prefix."""
    text = _PRIORITY.sub("", line.rstrip("\n"))
    record = _record(text)
    if record is None:
        return text
    when = str(record.get("timestamp", "")).replace("T", " ")[:19]
    level = str(record.get("level", "")).upper()
    head = f"{when} {level:<7} " + (f"[{record['deployment']}] " if "deployment" in record else "")
    fields = " ".join(f"{key}={_value(value)}" for key, value in record.items() if key not in _FIXED)
    return (head + str(record["event"]) + (f"  {fields}" if fields else "")).rstrip()


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``--since`` for log files: ``YYYY-MM-DD[ HH:MM[:SS]]`` (UTC, as the agent logs) or a
    relative ``10m``, ``2 h ago``, ``-30s``."""
    now = now or datetime.now(UTC)
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now - timedelta(seconds=int(relative.group(1)) * _UNITS[relative.group(2)])
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text.strip(), form).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise BadSince(
        f"--since {text!r} is neither a time nor an age",
        hint="use 'YYYY-MM-DD HH:MM[:SS]' (UTC) or an age such as '10m' or '2 h ago'",
    )


def _record(text: str) -> dict | None:
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "event" in record else None


def _value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return json.dumps(text) if (" " in text or not text) and isinstance(value, str) else text


def _write(lines: Iterable[str], *, raw: bool) -> None:
    out = sys.stdout
    for line in lines:
        out.write(line if raw else render(line) + "\n")
        out.flush()


def _since_filter(lines: Iterable[str], since: datetime | None) -> Iterator[str]:
    """Lines from ``since`` on, judged by the agent's timestamps; the engine's lines between
    two of them go with the one before."""
    keep = since is None
    for line in lines:
        record = _record(_PRIORITY.sub("", line.strip()))
        if since is not None and record is not None and "timestamp" in record:
            try:
                stamp = datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))
                keep = stamp >= since
            except ValueError:
                pass
        if keep:
            yield line


def _tail_file(path: Path, *, follow: bool, lines: int, since: datetime | None, raw: bool) -> int:
    if not path.exists():
        raise AgentError(f"no log file {path} yet", hint="the deployment has not run since log_dir was set")
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        tail = list(_since_filter(handle.readlines(), since))[-lines:] if lines > 0 else []
        _write(tail, raw=raw)
        if follow:
            _follow(handle, raw=raw)
    return 0


def _follow(handle: IO[str], *, raw: bool) -> None:
    partial = ""
    while True:
        chunk = handle.readline()
        if not chunk:
            time.sleep(0.2)
            continue
        partial += chunk
        if partial.endswith("\n"):
            _write([partial], raw=raw)
            partial = ""


def log_path(config: Config, name: str) -> Path | None:
    return config.settings.log_dir / f"{name}.log" if config.settings.log_dir else None
