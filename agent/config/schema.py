"""The configuration: agent.toml and models.d/NAME.toml, as frozen dataclasses.

These classes are the one source of truth for every key a user can write. They import no pydantic:
the launcher and `status` build them from JSON the CLI already validated (``from_json``), and
config/validation.py validates the files against them with pydantic's TypeAdapter. Each
key's checks are ``Check`` markers in its annotation, which pydantic runs per key (a file's every
problem is reported at once) and ``__post_init__`` runs for values built from JSON or in code;
checks across keys are ``problems()``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

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


def _secret_flag_problem(args: list[str]) -> str | None:
    for item in args:
        flag = secret_flag(item)
        if flag is not None:
            written = item.split("=", 1)[0]
            spelled = written if written == flag else f"{written} (vLLM reads it as {flag})"
            return (
                f"{spelled} puts a secret on the command line, which every user can read; "
                f"put it in the credentials directory instead (CONFIG_DIR/credentials/{flag[2:].replace('-', '_')})"
            )
    return None


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


def _repo_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot name files inside a repository, or None when it can."""
    if not pattern.strip():
        return "a pattern must not be empty"
    if pattern.startswith("/") or "\\" in pattern:
        return f"a pattern is a path inside the repository such as 'original/*', got {pattern!r}"
    if ".." in pattern.split("/"):
        return f"a pattern must not contain '..', got {pattern!r}"
    return None


def _convert(hint: Any, value: Any) -> Any:
    """``value`` (as JSON or a test wrote it) as the field's type: tables become their sections,
    lists of tables their items, strings paths, lists tuples. Already typed values pass through."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _convert(typing.get_args(hint)[0], value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            converted = _convert(arg, value) if arg is not type(None) else value
            if converted is not value:
                return converted
        return value
    if isinstance(hint, type) and is_dataclass(hint) and isinstance(value, dict):
        return hint(**value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint)
        return [_convert(item, each) for each in value]
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


class Check:
    """``Annotated[T, Check(problem)]``: ``problem(value)`` says why a value is wrong, or None.

    pydantic runs it per key (so a file's every problem is reported at once) through the hook
    below, which imports pydantic only when a file is validated; ``__post_init__`` runs it for
    values built from JSON or in code.
    """

    def __init__(self, problem: Callable[[Any], str | None]) -> None:
        self.problem = problem

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        def check(value: Any) -> Any:
            problem = self.problem(value)
            if problem:
                raise ValueError(problem)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))


def at_least(bound: float) -> Check:
    return Check(lambda value: None if value >= bound else f"must be >= {bound}, got {value!r}")


def above(bound: float) -> Check:
    return Check(lambda value: None if value > bound else f"must be > {bound}, got {value!r}")


def at_most(bound: float) -> Check:
    return Check(lambda value: None if value <= bound else f"must be <= {bound}, got {value!r}")


def at_most_chars(count: int) -> Check:
    return Check(lambda value: None if len(value) <= count else f"must be at most {count} characters")


NOT_EMPTY = Check(lambda value: None if len(value) else f"must not be empty, got {value!r}")
PositiveSeconds = Annotated[float, above(0)]
Port = Annotated[int, at_least(1), at_most(65535)]


@functools.cache
def _checks(cls: type) -> dict[str, list[tuple[type | None, Check]]]:
    """Per field, its checks, each with the type it belongs to in a union (``int | list``):
    a member's checks apply only to a value of that member's type."""

    def found(hint: Any, member: type | None) -> list[tuple[type | None, Check]]:
        if typing.get_origin(hint) is Annotated:
            return [(member, item) for item in hint.__metadata__ if isinstance(item, Check)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            return [check for arg in typing.get_args(hint) for check in found(arg, _base_type(arg))]
        return []

    return {name: found(hint, None) for name, hint in _hints(cls).items()}


def _base_type(hint: Any) -> type | None:
    """``list`` for ``Annotated[list[str], ...]``, ``int`` for ``int``; None for no class."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    base = typing.get_origin(hint) or hint
    return base if isinstance(base, type) else None


@dataclass(frozen=True)
class Section:
    """One table of a file. Unknown keys are errors: a typo must never be silently ignored."""

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for item in fields(self):
            value = getattr(self, item.name)
            converted = _convert(hints[item.name], value)
            if converted is not value:
                object.__setattr__(self, item.name, converted)
        checks = _checks(type(self))
        problems = [
            f"{name}: {problem}"
            for name in checks
            if (value := getattr(self, name)) is not None
            for member, check in checks[name]
            if (member is None or isinstance(value, member)) and (problem := check.problem(value))
        ] or self.problems()
        if problems:
            raise ValueError("\n".join(problems))

    def problems(self) -> list[str]:
        """Problems across keys, one ``KEY: message`` each, once every key is right; empty when all is well."""
        return []

    def as_json(self) -> dict[str, Any]:
        """What ``from_json`` reads back: the launcher and `status` get the validated values."""
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class HealthSettings(Section):
    checks: Annotated[list[str], NOT_EMPTY] = field(default_factory=lambda: ["http", "completion"])
    interval: PositiveSeconds = 10.0
    timeout: PositiveSeconds = 5.0
    failure_threshold: Annotated[int, at_least(1)] = 3
    deep_interval: PositiveSeconds | None = None


@dataclass(frozen=True)
class RestartSettings(Section):
    max_restarts: Annotated[int, at_least(0)] = 3
    window: PositiveSeconds = 60.0
    min_delay: Annotated[float, at_least(0)] = 2.0
    max_startup_failures: Annotated[int, at_least(1)] = 3


@dataclass(frozen=True)
class StartupSettings(Section):
    # Budget for load + health + tests, counted once the model is resolved (a download is bounded
    # by stall_timeout instead); systemd's own timeout is a backstop.
    timeout: PositiveSeconds = 1800.0
    # How long a download may receive no bytes, or the engine stay silent while loading, before
    # the start is given up.
    stall_timeout: PositiveSeconds = 300.0
    # How long a stopping engine gets after SIGTERM before it is SIGKILLed; the unit's
    # TimeoutStopSec is this plus 5 s, so the launcher can still record the stop.
    stop_timeout: PositiveSeconds = 25.0


@dataclass(frozen=True)
class EngineSettings(Section):
    command: Annotated[list[Annotated[str, NOT_EMPTY]], NOT_EMPTY, Check(_secret_flag_problem)] = field(
        default_factory=lambda: ["vllm", "serve"]
    )


@dataclass(frozen=True)
class PluginSettings(Section):
    block: list[str] = field(default_factory=list)


_MODEL_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")  # a served name or alias: one word of printable text


def _model_names_problem(value: list[str]) -> str | None:
    for item in value:
        if not _MODEL_NAME.fullmatch(item):
            return f"each name must be 1 to 200 characters without spaces, got {item!r}"
    if len(set(value)) != len(value):
        return f"names a model twice: {value!r}"
    return None


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


def _regex_problem(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as err:
        return f"not a valid regular expression: {err}, got {value!r}"
    return None


@dataclass(frozen=True)
class GatewayRoute(Section):
    """One ``[[gateway.routes]]`` entry: tried in order, after exact served names and aliases."""

    # An exact name, or a regular expression (full match).
    match: Annotated[str, NOT_EMPTY, at_most_chars(200), Check(_regex_problem)]
    to: Annotated[list[str], NOT_EMPTY, Check(_model_names_problem)]  # deployment names or aliases, one pool
    # Tried in order when no member of `to` can answer.
    fallback: Annotated[list[str], Check(_model_names_problem)] = field(default_factory=list)


def _listen_problem(value: str) -> str | None:
    try:
        parse_listen(value)
    except ValueError as err:
        return str(err)
    return None


@dataclass(frozen=True)
class GatewaySettings(Section):
    """agent.toml ``[gateway]``: the host's one OpenAI endpoint (`vllm-agent gateway`)."""

    listen: Annotated[str, Check(_listen_problem)] = "127.0.0.1:8080"
    # How many times one stream may move to another engine when its engine dies; 0: never.
    migration_limit: Annotated[int, at_least(0), at_most(100)] = 3
    # Further engines tried for one request before its first byte (connection errors, 5xx).
    retries: Annotated[int, at_least(0), at_most(100)] = 2
    # One JSON line per request (who, which model and deployment, status, timings; never prompts).
    access_log: bool = True
    routes: list[GatewayRoute] = field(default_factory=list)


def _absolute_problem(value: Path) -> str | None:
    if not value.is_absolute():
        return f"must be an absolute path, got {str(value)!r}"
    if ".." in value.parts:
        # systemd ignores a LoadCredential= or StandardOutput= path that is not normalised.
        return f"must be a normalised path without '..', got {str(value)!r}"
    return None


def _absolute_dirs_problem(value: list[Path]) -> str | None:
    return next(filter(None, map(_absolute_problem, value)), None)


def _ordered_problem(value: tuple[int, int]) -> str | None:
    return f"must be [low, high] with low <= high, got {list(value)}" if value[0] > value[1] else None


AbsolutePath = Annotated[Path, Check(_absolute_problem)]


@dataclass(frozen=True)
class AgentSettings(Section):
    """agent.toml."""

    port_range: Annotated[tuple[Port, Port], Check(_ordered_problem)] = (8000, 8999)
    state_dir: AbsolutePath | None = None
    # Where unit files and drop-ins are written; default: the scope's admin unit directory.
    unit_dir: AbsolutePath | None = None
    # When set, units append engine output to LOG_DIR/NAME.log (for hosts without journald).
    log_dir: AbsolutePath | None = None
    # Files here become systemd credentials (LoadCredential=), never environment or argv.
    credentials_dir: AbsolutePath | None = None
    # The daemon's status API (HTTP over a Unix socket); default: the scope's runtime directory.
    socket: AbsolutePath | None = None
    # Downloaded models (huggingface_hub's cache layout); default /var/cache/vllm-agent/huggingface,
    # or ~/.cache/vllm-agent/huggingface with --user.
    cache_dir: AbsolutePath | None = None
    engine: EngineSettings = field(default_factory=EngineSettings)
    plugins: PluginSettings = field(default_factory=PluginSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    restart: RestartSettings = field(default_factory=RestartSettings)
    startup: StartupSettings = field(default_factory=StartupSettings)
    # Where the `cache` source looks for plain model directories (an NFS share): a model
    # org/name is DIR/org/name, else DIR/name, in the order listed.
    model_dirs: Annotated[list[Path], Check(_absolute_dirs_problem)] = field(default_factory=list)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)


@dataclass(frozen=True)
class EngineSection(Section):
    command: Annotated[list[Annotated[str, NOT_EMPTY]], NOT_EMPTY, Check(_secret_flag_problem)] | None = None


@dataclass(frozen=True, init=False)
class TestSpec(Section):
    """One ``[[tests]]`` entry; runner-specific options are checked by the runner's plugin.

    ``TestSpec(runner="pytest", path="tests.d/x.py")``: keys besides runner, name and timeout are
    the runner's ``options`` (config/validation.py gathers them the same way from a file).
    """

    __test__: ClassVar[bool] = False  # not a pytest class

    runner: Annotated[str, NOT_EMPTY]
    name: str | None = None
    timeout: PositiveSeconds = 120.0
    options: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        runner: str,
        name: str | None = None,
        timeout: float = 120.0,
        options: dict[str, Any] | None = None,
        **more: Any,
    ) -> None:
        object.__setattr__(self, "runner", runner)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "timeout", timeout)
        object.__setattr__(self, "options", {**(options or {}), **more})
        self.__post_init__()


def _name_problem(value: str) -> str | None:
    if not NAME_RE.fullmatch(value):
        return f"must be 1 to 64 characters of [a-z0-9._-] starting with a letter or digit, got {value!r}"
    return None


def _host_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            return f"must be an IP address or a host name, got {value!r}"
    return None


def _env_problem(value: dict[str, str]) -> str | None:
    for key in value:
        if not _ENV_NAME.fullmatch(key):
            return f"{key!r} is not a valid environment variable name"
        if _SECRET_ENV.search(key):
            return (
                f"{key!r} looks like a secret; environment values are visible to every user in "
                "'systemctl show'. Put it in the credentials directory instead (e.g. hf_token, api_key)"
            )
    return None


def _include_files_problem(value: list[str]) -> str | None:
    return next(filter(None, map(_repo_pattern_problem, value)), None)


def _fraction_problem(value: float) -> str | None:
    return None if 0 < value <= 1 else f"must be > 0 and <= 1, got {value}"


def _gpu_ids_problem(value: int | list[int | str] | None) -> str | None:
    for item in value if isinstance(value, list) else []:
        if isinstance(item, int) and item < 0 or isinstance(item, str) and not _GPU_ID.fullmatch(item):
            return f"each GPU must be an index (0, 1, ...) or a UUID (GPU-..., MIG-...), got {item!r}"
    if isinstance(value, list):
        if len({str(item) for item in value}) != len(value):
            return f"names a device twice: {value!r}"
        if len(value) > 1 and any(str(item).startswith("MIG-") for item in value):
            # CUDA enumerates one MIG device per process: an engine cannot span two.
            return f"a MIG instance must be the deployment's only device, got {value!r}"
    return None


@dataclass(frozen=True)
class Deployment(Section):
    """models.d/NAME.toml; ``name`` comes from the file name."""

    name: Annotated[str, Check(_name_problem)]
    model: Annotated[str, Check(model_id_problem)]
    source: str | None = None
    revision: Annotated[str, NOT_EMPTY, at_most_chars(200)] | None = None
    served_model_name: Annotated[str, NOT_EMPTY, at_most_chars(200)] | None = None
    host: Annotated[str, Check(_host_problem)] = "127.0.0.1"
    port: Port | None = None
    gpus: Annotated[int, at_least(0)] | Annotated[list[int | str], Check(_gpu_ids_problem)] | None = None
    gpu_memory_utilization: Annotated[float, Check(_fraction_problem)] | None = None
    tensor_parallel_size: Annotated[int, at_least(1)] | None = None
    pipeline_parallel_size: Annotated[int, at_least(1)] | None = None
    # Seconds the launcher waits for GPU memory a stopping engine still holds (a restart).
    wait_for_memory: Annotated[float, at_least(0)] = 30.0
    # What the daemon does when a device of this deployment fails (a bad Xid, new ECC errors,
    # a lost GPU): stop it, keep it (the engine's own restarts decide), or move it elsewhere.
    on_gpu_failure: Literal["stop", "keep", "move"] = "stop"
    max_model_len: Annotated[int, at_least(1)] | None = None
    args: Annotated[list[str], Check(_secret_flag_problem)] = field(default_factory=list)
    env: Annotated[dict[str, str], Check(_env_problem)] = field(default_factory=dict)
    # Source "hf": files to download besides what the engine needs (fnmatch patterns such as
    # "original/*" or "*.gguf").
    include_files: Annotated[list[str], Check(_include_files_problem)] = field(default_factory=list)
    mode: Literal["managed", "monitored", "external"] = "managed"
    url: str | None = None
    engine: EngineSection = field(default_factory=EngineSection)
    startup: StartupSettings = field(default_factory=StartupSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    restart: RestartSettings = field(default_factory=RestartSettings)
    # None: the default smoke test; [] (`tests = []`): no post-start tests at all.
    tests: list[TestSpec] | None = None
    # The gateway: names this deployment answers to besides its served name, and the
    # deployments (or aliases) that answer for it, in order, when it cannot.
    aliases: Annotated[list[str], Check(_model_names_problem)] = field(default_factory=list)
    fallback: Annotated[list[str], Check(_model_names_problem)] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [problem for problem in (self._gpus_problem(), self._url_problem()) if problem]

    def _gpus_problem(self) -> str | None:
        """vLLM needs exactly tensor_parallel_size x pipeline_parallel_size devices. Without
        ``gpus`` (the CPU, or the whole host's devices) there is nothing to agree with."""
        count = len(self.gpus) if isinstance(self.gpus, list) else self.gpus
        if not count or (self.tensor_parallel_size is None and self.pipeline_parallel_size is None):
            return None
        tp, pp = self.tensor_parallel_size or 1, self.pipeline_parallel_size or 1
        if count != tp * pp:
            return (
                f"gpus: {count} GPU(s) do not match tensor_parallel_size x pipeline_parallel_size = "
                f"{tp} x {pp} = {tp * pp}"
            )
        return None

    def _url_problem(self) -> str | None:
        if self.mode == "external" and not self.url:
            return "url: required when mode = 'external'"
        if self.mode != "external" and self.url:
            return "url: only allowed with mode = 'external'"
        if self.url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.url):
            return f"url: must be an http:// or https:// URL, got {self.url!r}"
        return None

    @property
    def source_name(self) -> str:
        return self.source or ("local" if is_path_model(self.model) else "hf")

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.name

    def engine_command(self, settings: AgentSettings) -> list[str]:
        return list(self.engine.command or settings.engine.command)
