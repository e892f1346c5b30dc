"""Read a config directory: agent.toml plus models.d/NAME.toml, every problem reported at once.

Validation (pydantic) is imported only when a file is read: a process that gets its deployment
already validated (the launcher, `status`) never pays for it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DeploymentNotFound
from .names import NAME_RE
from .schema import (
    AGENT_FILE,
    MODELS_DIR,
    AgentSettings,
    Deployment,
    default_cache_dir,
    default_socket,
    default_state_dir,
    default_unit_dir,
)
from .validated import ValidatedStore

# Deployment tables whose defaults come from agent.toml.
_INHERITED = ("health", "restart", "startup")
CREDENTIALS_DIR = "credentials"  # in the config directory, unless agent.toml says otherwise


@dataclass(frozen=True)
class Config:
    path: Path
    user: bool
    settings: AgentSettings
    deployments: dict[str, Deployment] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir or default_state_dir(self.user)

    @property
    def socket(self) -> Path:
        return self.settings.socket or default_socket(self.user)

    @property
    def unit_dir(self) -> Path:
        return self.settings.unit_dir or default_unit_dir(self.user)

    def deployment(self, name: str) -> Deployment:
        try:
            return self.deployments[name]
        except KeyError:
            raise DeploymentNotFound(
                f"no deployment {name!r} in {self.path / MODELS_DIR}",
                hint=f"create {MODELS_DIR}/{name}.toml or run 'vllm-agent deploy {name} --model ...'",
            ) from None

    def deployment_file(self, name: str) -> Path:
        return self.path / MODELS_DIR / f"{name}.toml"


def load_config(path: Path, *, user: bool = False, problems: list[str] | None = None) -> Config:
    """Load and validate the whole directory; raise ConfigError listing every problem.

    With ``problems`` given, collect them there instead and return what is valid.
    """
    lenient = problems is not None
    problems = problems if problems is not None else []
    reader = _Reader(path, user, problems)
    deployments: dict[str, Deployment] = {}
    models_dir = path / MODELS_DIR
    if models_dir.is_dir():
        for file in sorted(models_dir.iterdir()):
            if file.suffix != ".toml" or file.name.startswith("."):
                continue
            deployment = reader.deployment(file)
            if deployment is not None:
                deployments[deployment.name] = deployment
    elif models_dir.exists():
        problems.append(f"{MODELS_DIR}: must be a directory")
    if problems and not lenient:
        raise ConfigError(problems, hint=f"fix the files in {path} and run 'vllm-agent validate'")
    return Config(path=path, user=user, settings=reader.settings, deployments=deployments)


def load_one(path: Path, name: str, *, user: bool = False) -> Config:
    """agent.toml and one deployment: a broken file elsewhere must not stop this one."""
    problems: list[str] = []
    reader = _Reader(path, user, problems)
    file = path / MODELS_DIR / f"{name}.toml"
    deployments: dict[str, Deployment] = {}
    if file.is_file():
        deployment = reader.deployment(file)
        if deployment is not None:
            deployments[name] = deployment
    if problems:
        raise ConfigError(problems, hint=f"fix the files in {path} and run 'vllm-agent validate'")
    return Config(path=path, user=user, settings=reader.settings, deployments=deployments)


def load_settings(path: Path, problems: list[str], *, user: bool = False) -> AgentSettings:
    return _Reader(path, user, problems).settings


class _Reader:
    """One read of a config directory: agent.toml first, then deployment files, each validated
    only when STATE_DIR/validated/ has no entry for its exact bytes (config/validated.py)."""

    def __init__(self, path: Path, user: bool, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        if path.exists() and not path.is_dir():
            problems.append(f"{path}: the config directory is not a directory")
            agent = None
        else:
            agent = _read_bytes(path / AGENT_FILE, AGENT_FILE, problems, missing_ok=True)
        # Parsed once: where the validated entries live is its state_dir, read before validation.
        data = None if agent is None else _parse_toml(agent, AGENT_FILE, problems)
        self.store = ValidatedStore(_state_dir(data, user), path, user, agent or b"")
        self.settings = self._settings(agent, data, user)

    def _settings(self, agent: bytes | None, data: dict[str, Any] | None, user: bool) -> AgentSettings:
        if agent is not None and (kept := self.store.get(AGENT_FILE, agent)) is not None:
            return AgentSettings.from_json(kept)
        settings = AgentSettings()
        if agent is not None:
            if data is None:  # invalid TOML, already reported
                return settings
            from .validation import validated

            try:
                settings = validated(AgentSettings, data, AGENT_FILE)
            except ConfigError as err:
                self.problems.extend(err.problems)
                return settings
        if settings.cache_dir is None:  # the scope decides: /var/cache/... or ~/.cache/...
            settings = replace(settings, cache_dir=default_cache_dir(user))
        if settings.credentials_dir is None:
            # As documented: CONFIG_DIR/credentials/{api_key,hf_token} reach the engine (LoadCredential=).
            settings = replace(settings, credentials_dir=Path(os.path.abspath(self.path)) / CREDENTIALS_DIR)
        if agent is not None:
            self.store.put(AGENT_FILE, agent, settings.as_json())
        return settings

    def deployment(self, file: Path) -> Deployment | None:
        label = f"{MODELS_DIR}/{file.name}"
        if not NAME_RE.fullmatch(file.stem):
            self.problems.append(
                f"{label}: the file name is not a valid deployment name: use 1 to 64 characters of "
                "[a-z0-9._-], starting with a letter or digit"
            )
            return None
        source = _read_bytes(file, label, self.problems)
        if source is None:
            return None
        if (kept := self.store.get(label, source)) is not None:
            return Deployment.from_json(kept)
        data = _parse_toml(source, label, self.problems)
        if data is None:
            return None
        if "name" in data:
            self.problems.append(f"{label}: name: unknown key; the deployment name is the file name ({file.stem!r})")
            return None
        try:
            deployment = deployment_from_data(file.stem, data, self.settings, label)
        except ConfigError as err:
            self.problems.extend(err.problems)
            return None
        self.store.put(label, source, deployment.as_json())
        return deployment


def _state_dir(agent: dict[str, Any] | None, user: bool) -> Path:
    """Where the validated entries live, known before agent.toml is validated: its state_dir
    when it names an absolute one (validation would agree), else the scope's default."""
    value = agent.get("state_dir") if agent else None
    return Path(value) if isinstance(value, str) and os.path.isabs(value) else default_state_dir(user)


def deployment_from_data(name: str, data: dict[str, Any], settings: AgentSettings, label: str = "") -> Deployment:
    """Validate one deployment's table, with agent.toml's defaults for the inherited tables;
    ConfigError lists every problem, each starting with ``label`` (models.d/NAME.toml)."""
    from .validation import validated

    merged = dict(data)
    for table in _INHERITED:
        defaults = getattr(settings, table).as_json()
        own = data.get(table)
        merged[table] = {**defaults, **own} if isinstance(own, dict) else (own if table in data else defaults)
    return validated(Deployment, {**merged, "name": name}, label or f"{MODELS_DIR}/{name}.toml")


def _read_bytes(file: Path, label: str, problems: list[str], missing_ok: bool = False) -> bytes | None:
    try:
        return file.read_bytes()
    except FileNotFoundError:
        if not missing_ok:
            problems.append(f"{label}: file not found")
    except OSError as err:
        problems.append(f"{label}: cannot read: {err}")
    return None


def _parse_toml(source: bytes, label: str, problems: list[str]) -> dict[str, Any] | None:
    try:
        return tomllib.loads(source.decode())
    except UnicodeDecodeError as err:
        problems.append(f"{label}: cannot read: {err}")
    except tomllib.TOMLDecodeError as err:
        problems.append(f"{label}: invalid TOML: {err}")
    return None
