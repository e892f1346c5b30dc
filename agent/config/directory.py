"""Read a config directory: agent.toml plus models.d/NAME.toml, every problem reported at once."""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

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
    settings = load_settings(path, problems, user=user)
    deployments: dict[str, Deployment] = {}
    models_dir = path / MODELS_DIR
    if models_dir.is_dir():
        for file in sorted(models_dir.iterdir()):
            if file.suffix != ".toml" or file.name.startswith("."):
                continue
            deployment = _load_deployment_file(path, file, settings, problems)
            if deployment is not None:
                deployments[deployment.name] = deployment
    elif models_dir.exists():
        problems.append(f"{MODELS_DIR}: must be a directory")
    if problems and not lenient:
        raise ConfigError(problems, hint=f"fix the files in {path} and run 'vllm-agent validate'")
    return Config(path=path, user=user, settings=settings, deployments=deployments)


def load_one(path: Path, name: str, *, user: bool = False) -> Config:
    """agent.toml and one deployment: a broken file elsewhere must not stop this one."""
    problems: list[str] = []
    settings = load_settings(path, problems, user=user)
    file = path / MODELS_DIR / f"{name}.toml"
    deployments: dict[str, Deployment] = {}
    if file.is_file():
        deployment = _load_deployment_file(path, file, settings, problems)
        if deployment is not None:
            deployments[name] = deployment
    if problems:
        raise ConfigError(problems, hint=f"fix the files in {path} and run 'vllm-agent validate'")
    return Config(path=path, user=user, settings=settings, deployments=deployments)


def load_settings(path: Path, problems: list[str], *, user: bool = False) -> AgentSettings:
    settings = _read_settings(path, problems)
    if settings.cache_dir is None:  # the scope decides: /var/cache/... or ~/.cache/...
        settings = settings.model_copy(update={"cache_dir": default_cache_dir(user)})
    if settings.credentials_dir is None:
        # As documented: CONFIG_DIR/credentials/{api_key,hf_token} reach the engine (LoadCredential=).
        default = Path(os.path.abspath(path)) / CREDENTIALS_DIR
        settings = settings.model_copy(update={"credentials_dir": default})
    return settings


def _read_settings(path: Path, problems: list[str]) -> AgentSettings:
    if path.exists() and not path.is_dir():
        problems.append(f"{path}: the config directory is not a directory")
        return AgentSettings()
    data = _read_toml(path / AGENT_FILE, AGENT_FILE, problems, missing_ok=True)
    if data is None:
        return AgentSettings()
    try:
        return AgentSettings.model_validate(data)
    except ValidationError as err:
        problems.extend(format_errors(AGENT_FILE, err, AgentSettings))
        return AgentSettings()


def deployment_from_data(name: str, data: dict[str, Any], settings: AgentSettings) -> Deployment:
    """Validate one deployment's table, with agent.toml's defaults for the inherited tables."""
    merged = dict(data)
    for table in _INHERITED:
        defaults = getattr(settings, table).model_dump()
        own = data.get(table)
        merged[table] = {**defaults, **own} if isinstance(own, dict) else (own if table in data else defaults)
    return Deployment.model_validate({**merged, "name": name})


def _load_deployment_file(root: Path, file: Path, settings: AgentSettings, problems: list[str]) -> Deployment | None:
    label = f"{MODELS_DIR}/{file.name}"
    if not NAME_RE.fullmatch(file.stem):
        problems.append(
            f"{label}: the file name is not a valid deployment name: use 1 to 64 characters of "
            "[a-z0-9._-], starting with a letter or digit"
        )
        return None
    data = _read_toml(file, label, problems)
    if data is None:
        return None
    if "name" in data:
        problems.append(f"{label}: name: unknown key; the deployment name is the file name ({file.stem!r})")
        return None
    try:
        return deployment_from_data(file.stem, data, settings)
    except ValidationError as err:
        problems.extend(format_errors(label, err, Deployment))
        return None


def _read_toml(file: Path, label: str, problems: list[str], missing_ok: bool = False) -> dict[str, Any] | None:
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        if not missing_ok:
            problems.append(f"{label}: file not found")
        return None
    except tomllib.TOMLDecodeError as err:
        problems.append(f"{label}: invalid TOML: {err}")
    except (OSError, UnicodeDecodeError) as err:
        problems.append(f"{label}: cannot read: {err}")
    return None


_TYPE_WORDS = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "path_type": "must be a path string",
}


def format_errors(label: str, err: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem: ``FILE: KEY: what is allowed, got VALUE``."""
    lines: list[str] = []
    for item in err.errors():
        key = _key_path(item["loc"], model)
        message = _message(item, model)
        lines.append(f"{label}: {key}: {message}" if key else f"{label}: {message}")
    return list(dict.fromkeys(lines))


def _key_path(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _is_union_tag(part):
            continue
        else:
            # A key from the file may hold anything TOML allows: keep the line one line.
            name = str(part) if str(part).isprintable() else repr(str(part))
            parts.append(("." if parts else "") + name)
    return "".join(parts)


def _is_union_tag(part: Any) -> bool:
    # pydantic names the union member it tried ("int", "list[union[int,str]]", "function-after[...]").
    return isinstance(part, str) and ("[" in part or part in {"int", "str", "float", "bool", "list", "none"})


def _message(item: dict[str, Any], model: type[BaseModel]) -> str:
    kind = item["type"]
    ctx = item.get("ctx") or {}
    got = item.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        known = _fields_at(model, [p for p in item["loc"][:-1] if not isinstance(p, int)])
        guess = difflib.get_close_matches(str(item["loc"][-1]), known, n=1)
        return "unknown key" + (f"; did you mean {guess[0]!r}?" if guess else f"; allowed: {', '.join(sorted(known))}")
    if kind == "value_error":
        return str(ctx.get("error", item["msg"]))
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sign = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {sign} {bound}, got {got!r}"
    if kind in ("too_short", "string_too_short"):
        return f"must not be empty, got {got!r}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    if kind in _TYPE_WORDS:
        return f"{_TYPE_WORDS[kind]}, got {got!r}"
    return f"{item['msg']}, got {got!r}"


def _fields_at(model: type[BaseModel], path: list[Any]) -> list[str]:
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        current = _model_in(fields[part].annotation)
    return list(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
