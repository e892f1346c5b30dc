"""Validate a file's table against its dataclass in config/schema.py, with pydantic.

The only module of config/ that imports pydantic: the CLI and the daemon read files through it,
the launcher and `status` read what it already validated. Every problem becomes one line naming
the file and the key; no pydantic error leaves this module.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import fields, is_dataclass
from functools import cache
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from ..errors import ConfigError
from .schema import Deployment, _hints, control_problem

T = TypeVar("T")
_TEST_KEYS = ("runner", "name", "timeout")


@cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def validated(cls: type[T], data: dict[str, Any], label: str) -> T:
    """``data`` (a file's table) as ``cls``; ConfigError with one ``LABEL: KEY: problem`` per problem."""
    # Unit files and sd_notify are line-based: such text is refused before anything else reads it.
    problem = control_problem(data)
    if problem:
        raise ConfigError([f"{label}: {problem}"])
    if cls is Deployment:
        data = _with_test_options(data)
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as err:
        raise ConfigError(format_errors(label, err, cls)) from None


def _with_test_options(data: dict[str, Any]) -> dict[str, Any]:
    """A [[tests]] entry's keys besides runner, name and timeout are its runner's options."""
    tests = data.get("tests")
    if not isinstance(tests, list):
        return data
    gathered = [
        {
            **{key: value for key, value in item.items() if key in _TEST_KEYS},
            "options": {key: value for key, value in item.items() if key not in _TEST_KEYS},
        }
        if isinstance(item, dict)
        else item
        for item in tests
    ]
    return {**data, "tests": gathered}


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
    "dataclass_type": "must be a table",
    "dataclass_exact_type": "must be a table",
    "path_type": "must be a path string",
}


def format_errors(label: str, err: ValidationError, model: type) -> list[str]:
    """One line per problem: ``FILE: KEY: what is allowed, got VALUE``."""
    lines: list[str] = []
    for item in err.errors():
        key = _key_path(item["loc"], model)
        for message in _message(item, model).split("\n"):
            # A section's own checks say "KEY: problem" for a key of theirs: one key path.
            own, sep, rest = message.partition(": ")
            if sep and own in _fields_at(
                model, [p for p in item["loc"] if not isinstance(p, int) and not _is_union_tag(p)]
            ):
                full, message = (f"{key}.{own}" if key else own), rest
            else:
                full = key
            lines.append(f"{label}: {full}: {message}" if full else f"{label}: {message}")
    return list(dict.fromkeys(lines))


def _key_path(loc: tuple[Any, ...], model: type) -> str:
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
    return isinstance(part, str) and (
        "[" in part or part.startswith("constrained-") or part in {"int", "str", "float", "bool", "list", "none"}
    )


def _message(item: dict[str, Any], model: type) -> str:
    kind = item["type"]
    ctx = item.get("ctx") or {}
    got = item.get("input")
    if kind in ("missing", "missing_argument"):
        return "required key is missing"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
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


def _fields_at(model: type, path: list[Any]) -> list[str]:
    current: Any = model
    for part in path:
        hints = _hints(current) if is_dataclass(current) else {}
        if part not in hints:
            return []
        current = _model_in(hints[part])
    return [item.name for item in fields(current)] if is_dataclass(current) else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and is_dataclass(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
