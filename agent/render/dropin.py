"""Render a deployment into its unit drop-in, the whole truth `systemctl cat` shows.

The template vllm@.service is static; everything a deployment decides lives in
vllm@NAME.service.d/50-vllm-agent.conf, with a hash of the rendered text so the agent can tell
when a running unit is stale.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config.credentials import CREDENTIALS
from ..config.directory import Config
from ..config.schema import Deployment
from . import escape as unitescape
from .engine_command import engine_argv

DROPIN_NAME = "50-vllm-agent.conf"
HASH_ENV = "VLLM_AGENT_HASH"
HASH_LINE = re.compile(r"^# vllm-agent-hash: ([0-9a-f]+)$", re.MULTILINE)
# A dedicated status for problems found before the engine starts (EX_CONFIG): systemd never
# restarts after it, so a taken port or a missing model does not burn the restart budget.
EXIT_CONFIG = 78
WATCHDOG = 30  # seconds of launcher silence before systemd calls it hung
EXEC_START = "ExecStart=\0"  # where the command goes once the hash is taken (NUL: in no directive)


@dataclass(frozen=True)
class Rendered:
    name: str
    text: str
    hash: str
    argv: tuple[str, ...]  # ExecStart, as systemd will run it


def agent_command() -> list[str]:
    """How a unit runs this vllm-agent: the console script beside this Python, else -m."""
    script = Path(sys.executable).parent / "vllm-agent"
    if script.exists():
        return [str(script)]
    found = shutil.which("vllm-agent")
    return [found] if found else [sys.executable, "-m", "vllm_agent"]


def dropin_path(config: Config, name: str) -> Path:
    return config.unit_dir / f"vllm@{name}.service.d" / DROPIN_NAME


def render(
    config: Config,
    deployment: Deployment,
    *,
    command: Sequence[str] | None = None,
    visible_devices: Sequence[str] | None = None,
    gpu_vendor: str = "nvidia",
    device_allow: Sequence[str] = (),
    directives: Mapping[str, Sequence[str]] | None = None,
) -> Rendered:
    settings = config.settings
    restart = deployment.restart
    startup = deployment.startup
    program = [*(command or agent_command())]
    # A relative --config-dir would mean another directory to systemd, which runs units from /.
    config_dir = unitescape.check(os.path.abspath(config.path), "--config-dir")
    launcher = ["--user"] if config.user else []
    launcher += ["--config-dir", config_dir, "launch", deployment.name, "--"]
    argv = program + launcher + engine_argv(deployment, settings)

    unit = [
        "Description=" + unitescape.plain(f"vLLM deployment {deployment.name} ({deployment.model})", "model"),
        # The burst counts starts, not restarts: the first start plus max_restarts restarts.
        f"StartLimitIntervalSec={_seconds(restart.window)}",
        f"StartLimitBurst={restart.max_restarts + 1}",
    ]
    service = [
        "Type=notify",
        "NotifyAccess=main",
        "Environment=" + unitescape.env_assignment("VLLM_AGENT_DEPLOYMENT", deployment.name, "name"),
    ]
    for key, value in sorted(deployment.env.items()):
        service.append("Environment=" + unitescape.env_assignment(key, value))
    if visible_devices is not None:
        service += [
            "Environment=" + unitescape.env_assignment(variable, value, "gpus")
            for variable, value in pin_environment(visible_devices, gpu_vendor)
        ]
    # Only for a unit that closes /dev (agent/gpu/devnodes.py): exactly the pinned devices' nodes.
    if device_allow:
        # An empty DeviceAllow= first: the system template's GPU classes would grant every device.
        service += ["DeviceAllow="] + ["DeviceAllow=" + unitescape.plain(node, "gpus") for node in device_allow]
    service += _credentials(config)
    service += [
        # The launcher extends this while the engine shows progress and enforces the whole
        # startup.timeout itself; this is the backstop for a launcher that stops talking.
        f"TimeoutStartSec={_seconds(startup.stall_timeout + 30)}",
        # The launcher gives the engine stop_timeout, then SIGKILLs it and records the stop:
        # 5 s more before systemd kills the whole cgroup.
        f"TimeoutStopSec={_seconds(startup.stop_timeout + 5)}",
        # The launcher feeds the watchdog while it runs and triggers it when the health checks
        # fail failure_threshold rounds in a row: systemd then restarts with Result=watchdog.
        f"WatchdogSec={WATCHDOG}s",
        "WatchdogSignal=SIGTERM",
        # SIGTERM to the launcher, which drains the engine; then SIGKILL to whatever is left in
        # the cgroup, so no VLLM::EngineCore survives a stop.
        "KillMode=mixed",
        # always: vLLM can exit 0 after its engine died, which on-failure would not restart.
        "Restart=always",
        f"RestartSec={_seconds(restart.min_delay)}",
        f"RestartPreventExitStatus={EXIT_CONFIG}",
    ]
    if settings.log_dir is not None:
        log = unitescape.plain(str(settings.log_dir / f"{deployment.name}.log"), "agent.toml: log_dir")
        service += [f"StandardOutput=append:{log}", "StandardError=inherit"]
    service += ["ExecStart=", EXEC_START]

    # Plugins' directives are whole lines of their own making; still, none may add a line.
    extra = {
        section: [unitescape.check(line, f"unit directive [{section}]") for line in lines]
        for section, lines in (directives or {}).items()
    }
    unit += extra.pop("Unit", [])
    service += extra.pop("Service", [])
    sections = {"Unit": unit, "Service": service, **extra}
    template = "\n".join(f"[{section}]\n" + "\n".join(lines) + "\n" for section, lines in sections.items())
    # The hash is of the deployment, not of where this vllm-agent is installed: a CLI and a
    # daemon from different installs render the same hash and do not keep restarting the unit.
    portable = template.replace(EXEC_START, "ExecStart=" + unitescape.exec_line(argv[len(program) :]), 1)
    digest = hashlib.sha256(portable.encode()).hexdigest()[:16]
    body = template.replace(EXEC_START, "ExecStart=" + unitescape.exec_line(argv), 1)
    body = body.replace("[Service]\n", f"[Service]\nEnvironment={HASH_ENV}={digest}\n", 1)
    header = (
        f"# Written by vllm-agent from {config_dir}/models.d/{deployment.name}.toml; do not edit.\n"
        f"# Change that file and run 'vllm-agent start {deployment.name}' (or let the daemon reconcile).\n"
        f"# vllm-agent-hash: {digest}\n\n"
    )
    return Rendered(name=deployment.name, text=header + body, hash=digest, argv=tuple(argv))


def pin_environment(devices: Sequence[str], vendor: str) -> list[tuple[str, str]]:
    """The variables that pin an engine to ``devices`` (UUIDs, GPU or MIG), by vendor.

    NVIDIA: CUDA_VISIBLE_DEVICES by UUID, with CUDA_DEVICE_ORDER=PCI_BUS_ID so anything that
    still counts devices counts them as nvidia-smi does. AMD: ROCR_VISIBLE_DEVICES by UUID (the
    runtime's own isolation), then HIP_VISIBLE_DEVICES counts within those. No devices (gpus = 0)
    hides every device from both vendors' runtimes.
    """
    joined = ",".join(devices)
    if not devices:
        return [("CUDA_VISIBLE_DEVICES", ""), ("HIP_VISIBLE_DEVICES", "")]
    if vendor == "amd":
        return [("ROCR_VISIBLE_DEVICES", joined), ("HIP_VISIBLE_DEVICES", ",".join(map(str, range(len(devices)))))]
    return [("CUDA_DEVICE_ORDER", "PCI_BUS_ID"), ("CUDA_VISIBLE_DEVICES", joined)]


def hash_of(text: str) -> str | None:
    match = HASH_LINE.search(text)
    return match.group(1) if match else None


def written_hash(config: Config, deployment: Deployment) -> str:
    """The hash of the drop-in on disk for ``deployment``; "" when none was written yet."""
    if deployment.port is None:
        return ""
    try:
        return hash_of(dropin_path(config, deployment.name).read_text()) or ""
    except FileNotFoundError:
        return ""


def _credentials(config: Config) -> list[str]:
    """Secrets reach the launcher as credentials: never in `systemctl show` or argv."""
    directory = config.settings.credentials_dir
    if directory is None:
        return []
    # A LoadCredential= whose file is missing fails the unit, so name only the files present.
    present = [name for name in CREDENTIALS if (directory / name).is_file()]
    lines = [
        f"LoadCredential={name}:" + unitescape.plain(str(directory / name), "agent.toml: credentials_dir")
        for name in present
    ]
    if "hf_token" in present:
        # huggingface_hub reads the token from this file; %d is $CREDENTIALS_DIRECTORY.
        lines.append("Environment=HF_TOKEN_PATH=%d/hf_token")
    return lines


def _seconds(value: float) -> str:
    return f"{int(value)}s" if float(value).is_integer() else f"{int(value * 1000)}ms"
