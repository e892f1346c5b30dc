"""The command line, parsed like vLLM 0.32's API server parses it (FlexibleArgumentParser).

The options of real vLLM, and how many values each takes, come from ``vllm_flags.txt`` (written
from vLLM's own parser by scripts/vllm_flags.py), in any form vLLM takes them: ``--max_model_len``
for ``--max-model-len``, ``--flag=value``, a unique prefix, ``--compilation-config.level 3``,
``-O3``. Anything else exits 2 with argparse's ``api_server.py: error: unrecognized arguments``, as
vLLM does. The fake's own ``--fake-*`` options come on top.
"""

from __future__ import annotations

import os

from .faults import ModeError, parse_modes

DEFAULT_MODEL = "facebook/opt-125m"
PROG = "api_server.py"

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
        "modes": _modes(mode_raw),
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


def _modes(text: str) -> dict[str, float | int | None]:
    try:
        return parse_modes(text)
    except ModeError as exc:
        raise UsageError(str(exc)) from None
