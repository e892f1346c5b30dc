"""Write deployment files: new ones from `deploy`, and the port written back once assigned."""

from __future__ import annotations

from typing import Any

import tomli_w
from pydantic import ValidationError

from .config import MODELS_DIR, Deployment
from .configdir import Config, deployment_from_data, format_errors
from .errors import ConfigError, DeploymentExists
from .fsutil import write_atomic
from .names import check_model_id, check_name
from .ports import allocate_port


def create(config: Config, name: str, data: dict[str, Any], *, replace: bool = False) -> Deployment:
    """Validate, then write models.d/NAME.toml atomically. Bad input writes nothing."""
    check_name(name)
    check_model_id(data.get("model", ""))
    path = config.deployment_file(name)
    label = f"{MODELS_DIR}/{name}.toml"
    if path.exists() and not replace:
        raise DeploymentExists(
            f"{label} already exists",
            hint=f"use 'vllm-agent start {name}' to start it, or remove it first with 'vllm-agent remove {name}'",
        )
    try:
        deployment = deployment_from_data(name, data, config.settings)
    except ValidationError as err:
        raise ConfigError(format_errors(label, err, Deployment)) from None
    header = f"# Deployment {name}, written by 'vllm-agent deploy'. Edit freely; 'vllm-agent validate' checks it.\n"
    write_atomic(path, header + tomli_w.dumps(data))
    return deployment


def assign_port(config: Config, deployment: Deployment) -> Deployment:
    """Give a deployment without a port the lowest free one of the range, written back to its file
    so it stays stable across restarts and hosts that read the file."""
    if deployment.port is not None:
        return deployment
    taken = {d.port for d in config.deployments.values() if d.port is not None and d.name != deployment.name}
    port = allocate_port(config.settings.port_range, taken)
    path = config.deployment_file(deployment.name)
    write_atomic(path, with_top_level_key(path.read_text(), "port", port))
    updated = deployment.model_copy(update={"port": port})
    config.deployments[deployment.name] = updated
    return updated


def with_top_level_key(text: str, key: str, value: int) -> str:
    """Insert ``key = value`` before the first key or table: top-level keys precede tables."""
    lines = text.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")), len(lines))
    lines.insert(at, f"{key} = {value}  # assigned by vllm-agent; keeps the port stable\n")
    return "".join(lines)

