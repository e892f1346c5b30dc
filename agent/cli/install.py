"""`vllm-agent init`: install the template and the agent's unit into the scope's unit directory.

Packages install them under /usr/lib/systemd instead; init is for pip installs, where the units
must run this very installation of vllm-agent.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from ..config.desired import boot_target
from ..config.directory import Config
from ..fsutil import symlink_atomic, write_atomic
from ..render import escape as unitescape
from ..render.dropin import agent_command

AGENT_UNIT = "vllm-agent.service"
GATEWAY_UNIT = "vllm-agent-gateway.service"
TEMPLATES = ("vllm@.service", AGENT_UNIT, GATEWAY_UNIT)
# The system scope's engine user and sandbox (User=vllm, ProtectSystem=strict, ...): a user
# manager cannot switch users, so the user scope never gets it.
SYSTEM_DROPINS = ("vllm@.service.d/10-system.conf",)
SERVICE_USER = "vllm"


def system_dropins(config: Config, *, lookup: Callable[[str], object] = pwd.getpwnam) -> tuple[str, ...]:
    """The sandbox drop-in, where its user exists. The package creates it (sysusers.d); a pip
    install without it keeps engines as root rather than failing every start with 217/USER."""
    if config.user:
        return ()
    try:
        lookup(SERVICE_USER)
    except KeyError:
        return ()
    return SYSTEM_DROPINS


PACKAGED_COMMAND = "/usr/bin/vllm-agent"


def unit_text(template: str, *, user: bool, command: list[str] | None = None, config_dir: Path | None = None) -> str:
    text = resources.files("vllm_agent").joinpath("unitfiles", template).read_text()
    if config_dir is not None:
        # The templates' own ExecStart= is "/usr/bin/vllm-agent --config-dir %E/vllm-agent ...".
        text = text.replace("%E/vllm-agent", unitescape.exec_word(os.path.abspath(config_dir), "--config-dir"))
    launcher = unitescape.exec_line([*(command or agent_command()), *(["--user"] if user else [])])
    if user:
        # A user manager has no multi-user.target; default.target is its equivalent.
        text = text.replace(f"WantedBy={boot_target(False)}", f"WantedBy={boot_target(True)}")
    return text.replace(PACKAGED_COMMAND, launcher)


def install_units(
    config: Config, *, command: list[str] | None = None, dropins: Sequence[str] | None = None
) -> list[Path]:
    """Write the units (and ``dropins``, default: system_dropins) whose text changed; return
    those written."""
    written = []
    for template in (*TEMPLATES, *(system_dropins(config) if dropins is None else dropins)):
        path = config.unit_dir / template
        text = unit_text(template, user=config.user, command=command, config_dir=config.path)
        if template in (AGENT_UNIT, GATEWAY_UNIT) and config.settings.log_dir is not None:
            # Hosts without journald: the daemon's lines go where the deployments' do.
            config.settings.log_dir.mkdir(parents=True, exist_ok=True)
            logname = template.removesuffix(".service") + ".log"
            log = unitescape.plain(str(config.settings.log_dir / logname), "agent.toml: log_dir")
            text = text.replace("[Service]\n", f"[Service]\nStandardOutput=append:{log}\nStandardError=inherit\n", 1)
        if not path.exists() or path.read_text() != text:
            write_atomic(path, text)
            written.append(path)
    (config.path / "models.d").mkdir(parents=True, exist_ok=True)
    return written


def enable_agent(config: Config) -> bool:
    """Enable vllm-agent.service as `systemctl enable` would; True when the link was new.

    Deployments come back at boot by themselves (their instances are enabled); the daemon
    coming back too converges whatever changed while the host was down.
    """
    link = config.unit_dir / f"{boot_target(config.user)}.wants" / AGENT_UNIT
    if link.is_symlink():
        return False
    symlink_atomic(link, config.unit_dir / AGENT_UNIT)
    return True
