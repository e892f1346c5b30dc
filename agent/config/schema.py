"""The configuration: agent.toml and models.d/NAME.toml, validated with pydantic.

These models are the one source of truth for every key a user can write. Loading never raises a
pydantic error: every problem becomes one line naming the file and the key.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..render.escape import describe_char, refused_char
from .names import NAME_RE, is_path_model, model_id_problem
from .paths import (  # noqa: F401 - re-exported: the paths belong with the settings they default
    ENV_CONFIG_DIR,
    SYSTEM_CONFIG_DIR,
    default_cache_dir,
    default_config_dir,
    default_socket,
    default_state_dir,
    default_unit_dir,
    resolve_config_dir,
)

AGENT_FILE = "agent.toml"
MODELS_DIR = "models.d"
TESTS_DIR = "tests.d"

PositiveSeconds = Annotated[float, Field(gt=0)]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Environment= is world-readable through `systemctl show`; secrets go through credentials.
_SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY|CREDENTIAL)", re.IGNORECASE)
# vLLM's FlexibleArgumentParser reads `--api_key` as `--api-key`, takes `--api-key=X` and
# `--api-key.a X` (JSON dict form), and argparse expands unambiguous abbreviations (`--api-k`).
# Each flag maps to the shortest prefix refused: shorter ones are ambiguous in every vLLM.
_SECRET_FLAGS = {"--api-key": "--ap", "--hf-token": "--hf-t"}
# GPU indexes, UUIDs (GPU-..., MIG-...), MIG's older GPU-UUID/GI/CI form.
_GPU_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/-]{0,127}")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def secret_flag(arg: str) -> str | None:
    """The secret vLLM flag that ``arg`` spells, in any form vLLM's parser accepts, or None."""
    if not arg.startswith("--"):
        return None
    name = arg.split("=", 1)[0].split(".", 1)[0].replace("_", "-")
    for flag, shortest in _SECRET_FLAGS.items():
        if name.startswith(shortest) and flag.startswith(name):
            return flag
    return None


def _no_secret_flags(args: list[str]) -> list[str]:
    for item in args:
        flag = secret_flag(item)
        if flag is not None:
            written = item.split("=", 1)[0]
            spelled = written if written == flag else f"{written} (vLLM reads it as {flag})"
            raise ValueError(
                f"{spelled} puts a secret on the command line, which every user can read; "
                f"put it in the credentials directory instead (CONFIG_DIR/credentials/{flag[2:].replace('-', '_')})"
            )
    return args


def control_problem(data: Any, key: str = "") -> str | None:
    """The first string (value or key) anywhere in ``data`` that holds a control character, as a
    one-line problem naming its key; None when there is none. Unit files and sd_notify are
    line-based: such text could add a directive, so it is refused everywhere."""
    if isinstance(data, str):
        char = refused_char(data)
        if char is None:
            return None
        shown = repr(data) if len(data) <= 120 else repr(data[:117]) + "..."
        return f"{key or 'value'}: must not contain control characters, found {describe_char(char)} in {shown}"
    if isinstance(data, dict):
        for name, item in data.items():
            name = str(name)
            char = refused_char(name)
            if char is not None:
                where = f"{key}: key" if key else "key"
                return f"{where} {name!r} must not contain control characters, found {describe_char(char)}"
            found = control_problem(item, f"{key}.{name}" if key else name)
            if found:
                return found
    elif isinstance(data, (list, tuple)):
        for index, item in enumerate(data):
            found = control_problem(item, f"{key}[{index}]")
            if found:
                return found
    return None


def _refuse_control_characters(data: Any) -> Any:
    problem = control_problem(data)
    if problem:
        raise ValueError(problem)
    return data


def _repo_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot name files inside a repository, or None when it can."""
    if not pattern.strip():
        return "a pattern must not be empty"
    if pattern.startswith("/") or "\\" in pattern:
        return f"a pattern is a path inside the repository such as 'original/*', got {pattern!r}"
    if ".." in pattern.split("/"):
        return f"a pattern must not contain '..', got {pattern!r}"
    return None


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthSettings(Strict):
    checks: list[str] = Field(default_factory=lambda: ["http", "completion"], min_length=1)
    interval: PositiveSeconds = 10.0
    timeout: PositiveSeconds = 5.0
    failure_threshold: Annotated[int, Field(ge=1)] = 3
    deep_interval: PositiveSeconds | None = None


class RestartSettings(Strict):
    max_restarts: Annotated[int, Field(ge=0)] = 3
    window: PositiveSeconds = 60.0
    min_delay: Annotated[float, Field(ge=0)] = 2.0
    max_startup_failures: Annotated[int, Field(ge=1)] = 3


class StartupSettings(Strict):
    # Budget for load + health + tests, counted once the model is resolved (a download is bounded
    # by stall_timeout instead); systemd's own timeout is a backstop.
    timeout: PositiveSeconds = 1800.0
    # How long a download may receive no bytes, or the engine stay silent while loading, before
    # the start is given up.
    stall_timeout: PositiveSeconds = 300.0
    # How long a stopping engine gets after SIGTERM before it is SIGKILLed; the unit's
    # TimeoutStopSec is this plus 5 s, so the launcher can still record the stop.
    stop_timeout: PositiveSeconds = 25.0


class EngineSettings(Strict):
    command: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=lambda: ["vllm", "serve"], min_length=1)

    _secrets = field_validator("command")(_no_secret_flags)


class PluginSettings(Strict):
    block: list[str] = Field(default_factory=list)


_MODEL_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")  # a served name or alias: one word of printable text


def _model_names(value: list[str]) -> list[str]:
    for item in value:
        if not _MODEL_NAME.fullmatch(item):
            raise ValueError(f"each name must be 1 to 200 characters without spaces, got {item!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"names a model twice: {value!r}")
    return value


def parse_listen(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) -> ``(host, port)``; ValueError naming what is wrong."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT with a port of 1 to 65535, got {value!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"must be HOST:PORT with an IP address or host name, got {value!r}") from None
    return host, int(port)


class GatewayRoute(Strict):
    """One ``[[gateway.routes]]`` entry: tried in order, after exact served names and aliases."""

    match: str = Field(min_length=1, max_length=200)  # an exact name, or a regular expression (full match)
    to: list[str] = Field(min_length=1)  # deployment names or aliases, one pool
    fallback: list[str] = Field(default_factory=list)  # tried in order when no member of `to` can answer

    _names = field_validator("to", "fallback")(_model_names)

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}, got {value!r}") from None
        return value


class GatewaySettings(Strict):
    """agent.toml ``[gateway]``: the host's one OpenAI endpoint (`vllm-agent gateway`)."""

    listen: str = "127.0.0.1:8080"
    # How many times one stream may move to another engine when its engine dies; 0: never.
    migration_limit: Annotated[int, Field(ge=0, le=100)] = 3
    # Further engines tried for one request before its first byte (connection errors, 5xx).
    retries: Annotated[int, Field(ge=0, le=100)] = 2
    # One JSON line per request (who, which model and deployment, status, timings; never prompts).
    access_log: bool = True
    routes: list[GatewayRoute] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value


class AgentSettings(Strict):
    """agent.toml."""

    port_range: tuple[Annotated[int, Field(ge=1, le=65535)], Annotated[int, Field(ge=1, le=65535)]] = (
        8000,
        8999,
    )
    state_dir: Path | None = None
    # Where unit files and drop-ins are written; default: the scope's admin unit directory.
    unit_dir: Path | None = None
    # When set, units append engine output to LOG_DIR/NAME.log (for hosts without journald).
    log_dir: Path | None = None
    # Files here become systemd credentials (LoadCredential=), never environment or argv.
    credentials_dir: Path | None = None
    # The daemon's status API (HTTP over a Unix socket); default: the scope's runtime directory.
    socket: Path | None = None
    # Downloaded models (huggingface_hub's cache layout); default /var/cache/vllm-agent/huggingface,
    # or ~/.cache/vllm-agent/huggingface with --user.
    cache_dir: Path | None = None
    engine: EngineSettings = Field(default_factory=EngineSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    restart: RestartSettings = Field(default_factory=RestartSettings)
    startup: StartupSettings = Field(default_factory=StartupSettings)
    # Where the `cache` source looks for plain model directories (an NFS share): a model
    # org/name is DIR/org/name, else DIR/name, in the order listed.
    model_dirs: list[Path] = Field(default_factory=list)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    _control = model_validator(mode="before")(_refuse_control_characters)

    @field_validator("port_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] > value[1]:
            raise ValueError(f"must be [low, high] with low <= high, got {list(value)}")
        return value

    @field_validator("state_dir", "unit_dir", "log_dir", "credentials_dir", "socket", "cache_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"must be an absolute path, got {str(value)!r}")
        if value is not None and ".." in value.parts:
            # systemd ignores a LoadCredential= or StandardOutput= path that is not normalised.
            raise ValueError(f"must be a normalised path without '..', got {str(value)!r}")
        return value

    @field_validator("model_dirs")
    @classmethod
    def _absolute_dirs(cls, value: list[Path]) -> list[Path]:
        for item in value:
            cls._absolute(item)
        return value


class EngineSection(Strict):
    command: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)

    @field_validator("command")
    @classmethod
    def _secrets(cls, value: list[str] | None) -> list[str] | None:
        return value if value is None else _no_secret_flags(value)


class TestSpec(BaseModel):
    """One ``[[tests]]`` entry; runner-specific options are checked by the runner's plugin."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __test__ = False  # not a pytest class

    runner: str = Field(min_length=1)
    name: str | None = None
    timeout: PositiveSeconds = 120.0

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Deployment(Strict):
    """models.d/NAME.toml; ``name`` comes from the file name."""

    name: str
    model: str
    source: str | None = None
    revision: str | None = Field(default=None, min_length=1, max_length=200)
    served_model_name: str | None = Field(default=None, min_length=1, max_length=200)
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    gpus: Annotated[int, Field(ge=0)] | list[int | str] | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: Annotated[int, Field(ge=1)] | None = None
    pipeline_parallel_size: Annotated[int, Field(ge=1)] | None = None
    # Seconds the launcher waits for GPU memory a stopping engine still holds (a restart).
    wait_for_memory: Annotated[float, Field(ge=0)] = 30.0
    # What the daemon does when a device of this deployment fails (a bad Xid, new ECC errors,
    # a lost GPU): stop it, keep it (the engine's own restarts decide), or move it elsewhere.
    on_gpu_failure: Literal["stop", "keep", "move"] = "stop"
    max_model_len: Annotated[int, Field(ge=1)] | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    # Source "hf": files to download besides what the engine needs (fnmatch patterns such as
    # "original/*" or "*.gguf").
    include_files: list[str] = Field(default_factory=list)
    mode: Literal["managed", "monitored", "external"] = "managed"
    url: str | None = None
    engine: EngineSection = Field(default_factory=EngineSection)
    startup: StartupSettings = Field(default_factory=StartupSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    restart: RestartSettings = Field(default_factory=RestartSettings)
    # None: the default smoke test; [] (`tests = []`): no post-start tests at all.
    tests: list[TestSpec] | None = None
    # The gateway: names this deployment answers to besides its served name, and the
    # deployments (or aliases) that answer for it, in order, when it cannot.
    aliases: list[str] = Field(default_factory=list)
    fallback: list[str] = Field(default_factory=list)

    _control = model_validator(mode="before")(_refuse_control_characters)
    _gateway_names = field_validator("aliases", "fallback")(_model_names)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError(
                f"must be 1 to 64 characters of [a-z0-9._-] starting with a letter or digit, got {value!r}"
            )
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        problem = model_id_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _fraction(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value <= 1:
            raise ValueError(f"must be > 0 and <= 1, got {value}")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.fullmatch(value):
                raise ValueError(f"must be an IP address or a host name, got {value!r}") from None
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_NAME.fullmatch(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if _SECRET_ENV.search(key):
                raise ValueError(
                    f"{key!r} looks like a secret; environment values are visible to every user in "
                    "'systemctl show'. Put it in the credentials directory instead (e.g. hf_token, api_key)"
                )
        return value

    _args = field_validator("args")(_no_secret_flags)

    @field_validator("include_files")
    @classmethod
    def _include_files(cls, value: list[str]) -> list[str]:
        for pattern in value:
            problem = _repo_pattern_problem(pattern)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("gpus")
    @classmethod
    def _gpu_ids(cls, value: int | list[int | str] | None) -> int | list[int | str] | None:
        for item in value if isinstance(value, list) else []:
            if isinstance(item, int) and item < 0 or isinstance(item, str) and not _GPU_ID.fullmatch(item):
                raise ValueError(f"each GPU must be an index (0, 1, ...) or a UUID (GPU-..., MIG-...), got {item!r}")
        if isinstance(value, list):
            if len({str(item) for item in value}) != len(value):
                raise ValueError(f"names a device twice: {value!r}")
            if len(value) > 1 and any(str(item).startswith("MIG-") for item in value):
                # CUDA enumerates one MIG device per process: an engine cannot span two.
                raise ValueError(f"a MIG instance must be the deployment's only device, got {value!r}")
        return value

    @model_validator(mode="after")
    def _gpus_match_parallelism(self) -> Deployment:
        """vLLM needs exactly tensor_parallel_size x pipeline_parallel_size devices. Without
        ``gpus`` (the CPU, or the whole host's devices) there is nothing to agree with."""
        count = len(self.gpus) if isinstance(self.gpus, list) else self.gpus
        if not count or (self.tensor_parallel_size is None and self.pipeline_parallel_size is None):
            return self
        tp, pp = self.tensor_parallel_size or 1, self.pipeline_parallel_size or 1
        if count != tp * pp:
            raise ValueError(
                f"gpus: {count} GPU(s) do not match tensor_parallel_size x pipeline_parallel_size = "
                f"{tp} x {pp} = {tp * pp}"
            )
        return self

    @model_validator(mode="after")
    def _mode_and_url(self) -> Deployment:
        if self.mode == "external" and not self.url:
            raise ValueError("url: required when mode = 'external'")
        if self.mode != "external" and self.url:
            raise ValueError("url: only allowed with mode = 'external'")
        if self.url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.url):
            raise ValueError(f"url: must be an http:// or https:// URL, got {self.url!r}")
        return self

    @property
    def source_name(self) -> str:
        return self.source or ("local" if is_path_model(self.model) else "hf")

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.name

    def engine_command(self, settings: AgentSettings) -> list[str]:
        return list(self.engine.command or settings.engine.command)
