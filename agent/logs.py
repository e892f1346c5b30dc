"""`vllm-agent logs`: the journal where there is one, else the unit's log file."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from .configdir import Config
from .errors import AgentError
from .names import unit_name


def show_logs(config: Config, name: str, *, follow: bool, lines: int) -> int:
    unit = unit_name(name)
    if config.settings.log_dir is not None:
        return _tail_file(config.settings.log_dir / f"{name}.log", follow=follow, lines=lines)
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise AgentError(
            "no journalctl on this host and no log_dir in agent.toml",
            hint="set log_dir in agent.toml so units write their output to files",
        )
    argv = [journalctl, "--user-unit" if config.user else "--unit", unit, "-n", str(lines), "--no-pager", "-o", "cat"]
    if follow:
        argv.append("-f")
    return subprocess.call(argv)


def _tail_file(path: Path, *, follow: bool, lines: int) -> int:
    if not path.exists():
        raise AgentError(f"no log file {path} yet", hint="the deployment has not run since log_dir was set")
    with path.open("rb") as handle:
        tail = handle.readlines()[-lines:] if lines > 0 else []
        out = sys.stdout.buffer
        out.writelines(tail)
        out.flush()
        while follow:
            chunk = handle.read()
            if chunk:
                out.write(chunk)
                out.flush()
            else:
                time.sleep(0.2)
    return 0


def log_path(config: Config, name: str) -> Path | None:
    return config.settings.log_dir / f"{name}.log" if config.settings.log_dir else None
