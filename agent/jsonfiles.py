"""The agent's own JSON files, read defensively and written without taking anyone down.

A state or history file can be damaged (a full disk during a copy, an editor, a bad restore):
such a file is moved aside with a warning and rebuilt, never a traceback. A disk that refuses
writes (ENOSPC, EROFS) is logged once per condition, not once per write.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import threading
import time
import typing
from pathlib import Path
from typing import Any, TypeVar

from .log import get_logger

if typing.TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

R = TypeVar("R")


class Damaged(ValueError):
    """What is wrong with a file's contents, in words."""


def decode(cls: type[R], data: Any, *, overrides: dict[str, Any] | None = None) -> R:
    """An instance of the dataclass ``cls`` from a JSON object whose known fields have the
    declared types; unknown keys are dropped (fields removed in newer versions)."""
    if not isinstance(data, dict):
        raise Damaged(f"expected a JSON object, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        if item.name not in data:
            continue
        value = data[item.name]
        if not _matches(value, hints[item.name]):
            raise Damaged(f"field {item.name!r} should be {_describe(hints[item.name])}, found {value!r:.60}")
        values[item.name] = float(value) if hints[item.name] is float else value
    values.update(overrides or {})
    try:
        return cls(**values)
    except TypeError as err:  # a required field is missing
        raise Damaged(str(err)) from None


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(element, item) for element in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


def read_bytes(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The file's bytes and the stat of what was read; None when it does not exist."""
    try:
        with path.open("rb") as handle:
            return handle.read(), os.fstat(handle.fileno())
    except FileNotFoundError:
        return None


def read_json_object(path: Path, trouble: Trouble) -> dict[str, Any]:
    """A JSON object file; {} when it does not exist, and a damaged one is moved aside."""
    found = read_bytes(path)
    if found is None:
        return {}
    raw, read = found
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise Damaged(f"expected a JSON object, found {type(data).__name__}")
    except (UnicodeDecodeError, ValueError) as err:  # Damaged and JSONDecodeError are ValueErrors
        move_aside(path, read, str(err), trouble)
        return {}
    return data


def move_aside(path: Path, read: os.stat_result, problem: str, trouble: Trouble) -> None:
    """Rename a damaged file to NAME.corrupt-TIMESTAMP so that it is rebuilt and kept for a
    person to look at. Only the file that was read: a writer may have replaced it meanwhile."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for count in range(1, 100):
        if not aside.exists():
            break
        aside = path.with_name(f"{path.name}.corrupt-{stamp}.{count}")
    try:
        now = os.stat(path)
        if (now.st_ino, now.st_dev) != (read.st_ino, read.st_dev):
            return  # rewritten since we read it: the new file is someone's good write
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another reader moved it first
    except OSError as err:
        trouble.report(
            ("move-aside", str(path), err.errno),
            "a damaged file could not be moved aside; using defaults",
            file=str(path),
            problem=problem,
            error=_error(err),
        )
        return
    trouble.log.warning("damaged file moved aside and rebuilt", file=str(path), moved_to=str(aside), problem=problem)


def _error(err: OSError) -> str:
    name = errno.errorcode.get(err.errno or 0, "")
    return f"{name}: {err.strerror}" if name else str(err)


class Trouble:
    """Disk trouble logged once per condition (what failed and its errno), and once more
    when it is over."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._active: set[tuple[Any, ...]] = set()
        self._lock = threading.Lock()

    @property
    def log(self) -> FilteringBoundLogger:
        # Made when there is trouble to log: modules create their Trouble at import.
        return get_logger(component=self.what)

    def report(self, key: tuple[Any, ...], event: str, **fields: Any) -> None:
        with self._lock:
            if key in self._active:
                return
            self._active.add(key)
        self.log.warning(event, **fields)

    def write_failed(self, path: Path, err: OSError, keeping: str) -> None:
        self.report(
            ("write", err.errno),
            "cannot write; keeping the change in memory and retrying on the next write",
            file=str(path),
            error=_error(err),
            keeping=keeping,
        )

    def writes_work(self, path: Path) -> None:
        with self._lock:
            over = [key for key in self._active if key[0] == "write"]
            self._active.difference_update(over)
        if over:
            self.log.info("writes work again; what was kept in memory is on disk", file=str(path))
