"""Logging with structlog: console on a TTY, JSON lines with a syslog prefix for journald.

structlog is imported on first use: `status` and other quick commands that never log do not
pay for it (about 15 ms). A process that did not configure logging gets stderr on first use.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

# journald reads a leading "<N>" as the line's syslog priority.
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2, "exception": 3}


def _syslog_prefix(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    event_dict["_priority"] = _PRIORITY.get(event_dict.get("level", "info"), 6)
    return event_dict


def _render_journal(_: Any, __: str, event_dict: dict[str, Any]) -> str:
    import structlog

    priority = event_dict.pop("_priority", 6)
    return f"<{priority}>" + structlog.processors.JSONRenderer(sort_keys=False)(_, __, event_dict)


def wants_console(stream: TextIO) -> bool:
    """The console renderer only for a person at a terminal that is not the journal."""
    return stream.isatty() and not os.environ.get("JOURNAL_STREAM")


def configure(*, verbose: bool = False, stream: TextIO | None = None) -> None:
    import structlog

    stream = stream or sys.stdout
    level = logging.DEBUG if verbose else logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if wants_console(stream):
        processors = [*shared, structlog.dev.ConsoleRenderer(colors=False)]
    else:
        processors = [*shared, structlog.processors.format_exc_info, _syslog_prefix, _render_journal]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> FilteringBoundLogger:
    import structlog

    if not structlog.is_configured():  # by configure(), or a test's capture_logs
        configure(stream=sys.stderr)  # stdout may be a command's result (status --json)
    return structlog.get_logger("vllm_agent").bind(**bound)


def for_deployment(name: str) -> FilteringBoundLogger:
    return get_logger(deployment=name)
