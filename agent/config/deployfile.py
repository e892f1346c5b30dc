"""Write deployment files: new ones from `deploy`, and the port written back once assigned."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from typing import Any

import tomli_w

from ..errors import ConfigError, DeploymentExists
from ..fsutil import write_atomic
from .directory import Config, deployment_from_data
from .lock import config_lock
from .names import NAME_RE, check_model_id, check_name, model_id_problem
from .ports import allocate_port
from .schema import MODELS_DIR, Deployment


def create(config: Config, name: str, data: dict[str, Any], *, replace: bool = False) -> Deployment:
    """Validate, then write models.d/NAME.toml atomically. Bad input writes nothing."""
    check_name(name)
    check_model_id(data.get("model", ""))
    path = config.deployment_file(name)
    label = f"{MODELS_DIR}/{name}.toml"
    deployment = deployment_from_data(name, data, config.settings, label)
    header = f"# Deployment {name}, written by 'vllm-agent deploy'. Edit freely; 'vllm-agent validate' checks it.\n"
    with config_lock(config.path):
        if path.exists() and not replace:
            raise DeploymentExists(
                f"{label} already exists",
                hint=f"use 'vllm-agent start {name}' to start it, or remove it first with 'vllm-agent remove {name}'",
            )
        if deployment.port is not None and (holder := ports_on_disk(config, exclude=name).get(deployment.port)):
            raise ConfigError(
                [f"{label}: port: {deployment.port} is already the port of {MODELS_DIR}/{holder}.toml"],
                hint="choose another port, or leave it out to get a free one",
            )
        write_atomic(path, header + tomli_w.dumps(data))
    return deployment


def assign_port(config: Config, deployment: Deployment) -> Deployment:
    """Give a deployment without a port the lowest free one of the range, written back to its file
    so it stays stable across restarts and hosts that read the file."""
    if deployment.port is not None:
        return deployment
    path = config.deployment_file(deployment.name)
    with config_lock(config.path):
        # Decide from the files as they are now, not from the view loaded before the lock:
        # another vllm-agent may have assigned a port meanwhile, to this deployment too.
        text = path.read_text()
        own = _port_in(text)
        if own is None:
            port = allocate_port(config.settings.port_range, set(ports_on_disk(config, exclude=deployment.name)))
            write_atomic(path, with_top_level_key(text, "port", port))
        else:
            port = own
    updated = dataclasses.replace(deployment, port=port)
    config.deployments[deployment.name] = updated
    return updated


def ports_on_disk(config: Config, *, exclude: str = "") -> dict[int, str]:
    """Port -> deployment, for every deployment file as it is on disk now (read under the lock)."""
    found: dict[int, str] = {}
    models = config.path / MODELS_DIR
    for file in sorted(models.glob("*.toml")) if models.is_dir() else ():
        if file.stem == exclude or not NAME_RE.fullmatch(file.stem):
            continue
        try:
            port = _port_in(file.read_text())
        except (OSError, UnicodeDecodeError):
            continue  # validate reports it; its port cannot be known
        if port is not None:
            found.setdefault(port, file.stem)
    return found


def _port_in(text: str) -> int | None:
    try:
        port = tomllib.loads(text).get("port")
    except tomllib.TOMLDecodeError:
        return None
    return port if isinstance(port, int) and not isinstance(port, bool) else None


def with_top_level_key(text: str, key: str, value: int) -> str:
    """Insert ``key = value`` before the first key or table: top-level keys precede tables."""
    lines = text.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")), len(lines))
    lines.insert(at, f"{key} = {value}  # assigned by vllm-agent; keeps the port stable\n")
    return "".join(lines)


_MODEL_LINE = re.compile(r"^(\s*)model\s*=.*$")


def set_model(config: Config, name: str, model: str) -> Deployment:
    """`start NAME --model M`: write ``model = M`` into models.d/NAME.toml, validated like the file
    and under the config lock; bad input writes nothing. The other lines (comments too) stay."""
    label = f"{MODELS_DIR}/{name}.toml"
    problem = model_id_problem(model)
    if problem:
        raise ConfigError(
            [f"{label}: model: {problem}"], hint="e.g. 'Qwen/Qwen2.5-0.5B-Instruct' or '/srv/models/llama'"
        )
    path = config.deployment_file(name)
    with config_lock(config.path):
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        tables = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
        at = next((i for i in range(tables) if _MODEL_LINE.match(lines[i])), None)
        if at is None:
            raise ConfigError(
                [f"{label}: model: no top-level 'model = ...' line to replace"], hint=f"edit {path} by hand"
            )
        lines[at] = tomli_w.dumps({"model": model})
        updated = "".join(lines)
        try:
            deployment = deployment_from_data(name, tomllib.loads(updated), config.settings, label)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError([f"{label}: {err}"], hint=f"fix {path} first; 'vllm-agent validate' checks it") from None
        if updated != text:
            write_atomic(path, updated)
    config.deployments[name] = deployment
    return deployment
