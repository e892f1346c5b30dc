"""Doctor's findings for one deployment: its unit, desired vs actual state, port, HTTP answers
(/health, /v1/models, a one-token generation), GPU placement, model files and its last failure."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.desired import RUNNING, DesiredStates, boot_target
from ..config.names import unit_name
from ..config.ports import port_holder
from ..deployments.state import StateStore
from ..deployments.status import DeploymentStatus, classify, unit_result_reason
from ..errors import AgentError
from ..urls import local_url
from .diagnose import Diagnosis, diagnose
from .report import Finding, Probes, ProbeTimeout, bounded, off_loop

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..config.directory import Config
    from ..config.schema import Deployment
    from ..plugin_api import GpuDevice
    from ..pluginhost.manager import Plugins
    from ..systemd.model import UnitManager, UnitState

LOG_LINES = 200  # of the journal or the log file: enough for a traceback and its cause
SERVING = ("ready", "unhealthy")


async def deployment_findings(
    config: Config,
    plugins: Plugins,
    probes: Probes,
    units: UnitManager | None,
    name: str,
    devices: Mapping[str, GpuDevice] | None = None,
) -> list[Finding]:
    """``devices``: the GPU devices the host listing found, by UUID."""
    deployment = config.deployments.get(name)
    if deployment is None:  # a broken file: validate names the problem
        return [Finding(name, "config", "fail", f"models.d/{name}.toml is not valid", "run 'vllm-agent validate'")]
    found: list[Finding] = []
    status: DeploymentStatus | None = None
    unit: UnitState | None = None
    if units is None:
        found.append(
            Finding(name, "unit", "fail", "not checked: systemd cannot be reached", "see the host's systemd line")
        )
    else:
        try:
            unit = await bounded(units.get_state(unit_name(name)), probes.timeout)
        except (AgentError, ProbeTimeout) as err:
            found.append(Finding(name, "unit", "fail", f"{unit_name(name)}: {err}", "see the host's systemd line"))
    if unit is not None:
        desired = DesiredStates(config.state_dir, config.unit_dir, user=config.user)
        status = _status(config, deployment, unit, desired)
        found.append(_unit_finding(config, name, unit, desired))
        found.append(_state_finding(status))
    found.append(await _port_finding(deployment, unit, probes))
    if status is not None and status.state in SERVING:
        found += await _http_findings(config, deployment, probes)
    found += _gpu_findings(config, deployment, devices or {})
    found.append(await _model_finding(plugins, deployment, probes))
    if status is not None and unit is not None:
        failure = await _failure_finding(config, deployment, unit, status, probes)
        if failure is not None:
            found.append(failure)
    return found


def _status(config: Config, deployment: Deployment, unit: UnitState, desired: DesiredStates) -> DeploymentStatus:
    from ..gpu.records import PlacementRecords

    saved = StateStore(config.state_dir).load(deployment.name)
    devices = PlacementRecords(config.state_dir).get(deployment.name) if deployment.gpus else None
    return classify(deployment, unit, saved, desired=desired.get(deployment.name), devices=devices)


def _unit_finding(config: Config, name: str, unit: UnitState, desired: DesiredStates) -> Finding:
    if unit.load_state != "loaded":
        return Finding(
            name,
            "unit",
            "fail",
            f"{unit.name} is {unit.load_state}",
            "'vllm-agent init' installs vllm@.service" if unit.load_state == "not-found" else "see 'systemctl status'",
        )
    link = config.unit_dir / f"{boot_target(config.user)}.wants" / unit.name
    wanted = desired.get(name) == RUNNING
    if wanted != link.is_symlink():
        return Finding(
            name,
            "unit",
            "warn",
            f"{unit.name} loaded, but {'not ' if wanted else ''}enabled at boot while desired {desired.get(name)}",
            f"'vllm-agent {'start' if wanted else 'stop'} {name}' sets both",
        )
    return Finding(name, "unit", "ok", f"{unit.name} loaded, {'enabled' if wanted else 'disabled'} at boot")


def _state_finding(status: DeploymentStatus) -> Finding:
    name, state, desired = status.name, status.state, status.desired
    text = f"desired {desired}, {state}" + (f": {status.reason}" if status.reason else "")
    if desired == RUNNING:
        if state == "ready":
            return Finding(name, "state", "ok", f"desired running, ready at {status.url}")
        if state == "starting":
            return Finding(name, "state", "warn", text, f"'vllm-agent status {name}' shows its progress")
        return Finding(name, "state", "fail", text, status.hint or f"'vllm-agent start {name}' starts it")
    if state == "stopped":
        return Finding(name, "state", "ok", "desired stopped, stopped")
    return Finding(name, "state", "warn", text, f"'vllm-agent stop {name}' if it should stay stopped")


def _own(pid: int, unit: UnitState | None, proc: Path = Path("/proc")) -> bool:
    """Whether ``pid`` belongs to the unit: its main process, in its cgroup, or a descendant."""
    if unit is None or not pid or not unit.main_pid:
        return False
    try:
        if f"/{unit.name}" in (proc / str(pid) / "cgroup").read_text():
            return True
    except OSError:
        pass
    for _ in range(32):  # the engine is the launcher's child; its helpers, grandchildren
        if pid == unit.main_pid:
            return True
        try:
            status = (proc / str(pid) / "status").read_text()
            pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        except (OSError, StopIteration, ValueError):
            return False
        if pid <= 1:
            return False
    return False


async def _port_finding(deployment: Deployment, unit: UnitState | None, probes: Probes) -> Finding:
    name, port = deployment.name, deployment.port
    if port is None:
        return Finding(name, "port", "warn", "no port assigned yet", f"'vllm-agent start {name}' assigns one")
    holder_of = probes.get("port_holder", port_holder)
    try:
        holder = await off_loop(holder_of, port, deployment.host, seconds=probes.timeout)
    except Exception as err:
        return Finding(name, "port", "warn", f"port {port}: cannot read the socket tables: {err}")
    if holder is None:
        running = unit is not None and unit.active_state == "active"
        if running:
            return Finding(name, "port", "fail", f"port {port}: nothing listens, yet the unit is active", "")
        if unit is not None and unit.active_state in ("activating", "reloading"):
            return Finding(name, "port", "ok", f"port {port}: not listening yet (vLLM listens once loaded)")
        return Finding(name, "port", "ok", f"port {port} on {deployment.host} is free")
    if _own(holder.pid or 0, unit):
        return Finding(name, "port", "ok", f"port {port} is served by its engine, {holder.describe()}")
    return Finding(
        name,
        "port",
        "fail",
        f"port {port} is held by {holder.describe()}, not by {unit_name(name)}",
        f"stop that process, or choose another port in models.d/{name}.toml",
    )


async def _http_findings(config: Config, deployment: Deployment, probes: Probes) -> list[Finding]:
    from ..daemon.external import api_key_of

    name = deployment.name
    base = local_url(deployment.host, deployment.port or 0)
    api_key = api_key_of(config.settings)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    found = []
    async with probes.http() as client:

        async def ask(method: str, path: str, **kwargs: Any) -> Any:
            return await bounded(client.request(method, base + path, headers=headers, **kwargs), probes.timeout)

        try:
            health = await ask("GET", "/health")
            level = "ok" if health.status_code == 200 else "fail"
            found.append(Finding(name, "health", level, f"GET /health: {health.status_code}", _dead_hint(name)))
        except Exception as err:
            found.append(Finding(name, "health", "fail", f"GET /health: {_why(err)}", _dead_hint(name)))
            return found  # the engine does not answer: the rest would only time out too
        try:
            models = await ask("GET", "/v1/models")
            ids = [item.get("id") for item in models.json().get("data", [])] if models.status_code == 200 else []
            if deployment.served_name in ids:
                found.append(Finding(name, "models", "ok", f"GET /v1/models serves {deployment.served_name!r}"))
            else:
                text = f"GET /v1/models: {models.status_code}, serves {ids}, not {deployment.served_name!r}"
                found.append(Finding(name, "models", "fail", text, f"'vllm-agent restart {name}'"))
        except Exception as err:
            found.append(Finding(name, "models", "fail", f"GET /v1/models: {_why(err)}", _dead_hint(name)))
        body = {"model": deployment.served_name, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
        try:
            answer = await ask("POST", "/v1/completions", json=body)
            if answer.status_code == 200 and answer.json().get("choices"):
                found.append(Finding(name, "generation", "ok", "a one-token completion answered"))
            else:
                text = f"a one-token completion: {answer.status_code} {answer.text[:160]}"
                found.append(Finding(name, "generation", "fail", text, _dead_hint(name)))
        except Exception as err:
            text = f"a one-token completion: {_why(err)} (a /health of 200 alone does not prove it serves)"
            found.append(Finding(name, "generation", "fail", text, _dead_hint(name)))
        try:
            version = (await ask("GET", "/version")).json().get("version", "?")
            found.append(Finding(name, "version", "ok", f"engine version {version}"))
        except Exception:
            pass  # older engines have no /version; the host's engine line names the install
    return found


def _why(err: BaseException) -> str:
    return str(err) or type(err).__name__


def _dead_hint(name: str) -> str:
    return f"the engine is wedged or dead: 'vllm-agent restart {name}'; 'vllm-agent logs {name}' shows why"


def _gpu_findings(config: Config, deployment: Deployment, listed: Mapping[str, GpuDevice]) -> list[Finding]:
    """Where it is placed, and each device's free memory and health as the host listing saw them now."""
    if not deployment.gpus:
        return []
    from ..gpu.quarantine import QuarantineStore
    from ..gpu.records import PlacementRecords

    name = deployment.name
    slots = PlacementRecords(config.state_dir).get(name)
    if not slots:
        return [
            Finding(name, "gpu", "warn", f"gpus = {deployment.gpus!r}, not placed yet", f"'vllm-agent start {name}'")
        ]
    quarantined = QuarantineStore(config.state_dir).all()
    found = []
    for slot in slots:
        shown = f"gpu {slot.label} ({slot.name}, {slot.uuid})"
        sick = quarantined.get(slot.uuid) or quarantined.get(slot.parent)
        device = listed.get(slot.uuid)
        if sick:
            text = f"{shown} is quarantined: {sick.get('reason', '')}"
            found.append(Finding(name, "gpu", "fail", text, "'vllm-agent gpus' shows it; '--release ID' once repaired"))
        elif device is None:
            text = f"{shown}: not listed by any GPU backend now"
            found.append(Finding(name, "gpu", "fail", text, "see the host's gpu lines; 'nvidia-smi' or 'amd-smi'"))
        else:
            health = getattr(device, "health", None)  # a snapshot has it; a plain GpuDevice not
            problems = health.problems if health is not None else []
            free = f"{device.memory_free / 2**30:.1f} of {device.memory_total / 2**30:.1f} GiB free"
            level = "warn" if problems else "ok"
            found.append(
                Finding(name, "gpu", level, f"{shown}: {free}" + (f"; {'; '.join(problems)}" if problems else ""))
            )
    return found


async def _model_finding(plugins: Plugins, deployment: Deployment, probes: Probes) -> Finding:
    name = deployment.name
    path = _model_path(plugins, deployment)
    if path is None:
        return Finding(
            name, "model", "warn", f"{deployment.model}: not in the local cache yet; the first start fetches it"
        )
    from vllm_agent_plugins.source_local import check_model_dir

    try:
        summary = await off_loop(check_model_dir, path, seconds=max(probes.timeout, 30.0))
    except AgentError as err:
        return Finding(name, "model", "fail", err.message, err.hint or "")
    except ProbeTimeout as err:
        return Finding(name, "model", "warn", f"{path}: not verified, {err}")
    return Finding(name, "model", "ok", f"{path}: {summary}")


def _model_path(plugins: Plugins, deployment: Deployment) -> Path | None:
    """Where the model's files are on this host without fetching anything: the path itself, or the
    Hugging Face cache's snapshot for the revision."""
    if deployment.source_name == "local" or deployment.model.startswith("/"):
        return Path(deployment.model)
    source = plugins.model_sources().get(deployment.source_name)
    cache = getattr(source, "cache_dir", None)
    if not isinstance(cache, Path):
        return None
    repo = cache / ("models--" + deployment.model.replace("/", "--"))
    revision = deployment.revision or "main"
    try:
        commit = (repo / "refs" / revision).read_text().strip()
    except OSError:
        commit = revision  # a commit hash given as the revision
    snapshot = repo / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


async def _failure_finding(
    config: Config, deployment: Deployment, unit: UnitState, status: DeploymentStatus, probes: Probes
) -> Finding | None:
    """The last failure, classified, when the deployment is not serving as wanted or restarted."""
    name = deployment.name
    troubled = status.state in ("failed", "crash-loop", "unhealthy") or (
        status.state == "stopped" and status.desired == RUNNING and unit.result not in ("", "success")
    )
    if not troubled and not unit.n_restarts:
        return None
    lines = await _log_lines(config, name, probes)
    saved = StateStore(config.state_dir).load(name)
    # Newest last: the log, then the launcher's recorded reason, then systemd's word for the end.
    evidence = [*lines, saved.reason, unit_result_reason(unit) if unit.result not in ("", "success") else ""]
    found: Diagnosis = diagnose([line for line in evidence if line], unit.exec_main_status)
    looping = status.state == "crash-loop" or unit.result == "start-limit-hit" or "start limit hit" in status.reason
    text, hint = found.reason, found.hint.replace("NAME", name)
    if found.kind == "exit" and saved.reason:  # no known class: the launcher's own words say more
        text, hint = saved.reason, saved.hint or hint
    if looping and found.kind != "crash-loop":
        text = f"crash loop; cause: {text}"
        hint += f"; then 'vllm-agent start {name}' resets it"
    level = "fail" if troubled else "warn"
    if not troubled:
        text = f"{unit.n_restarts} restart(s); last failure: {text}"
    return Finding(name, "last-failure", level, text, hint, kind=found.kind)


async def _log_lines(config: Config, name: str, probes: Probes) -> list[str]:
    """The unit's last output lines: the log file (log_dir), else the journal."""
    if config.settings.log_dir is not None:
        path = config.settings.log_dir / f"{name}.log"
        return await off_loop(_tail, path, seconds=probes.timeout)
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        return []
    scope = "--user-unit" if config.user else "--unit"
    argv = [journalctl, scope, unit_name(name), "-n", str(LOG_LINES), "--no-pager", "-o", "cat"]
    try:
        _, output = await off_loop(probes.run, argv, probes.timeout, seconds=probes.timeout + 1)
    except Exception:
        return []
    return output.splitlines()


def _tail(path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - (1 << 20)))  # the last MiB is plenty
            return handle.read().decode(errors="replace").splitlines()[-LOG_LINES:]
    except OSError:
        return []
