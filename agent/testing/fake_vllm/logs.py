"""Log lines as vLLM writes them: its own ``INFO 05-06 12:00:00 [api_server.py:1] message`` lines
(with ``(Worker pid=N)`` before those of another process) and uvicorn's ``INFO:     message``.

Whole lines under one lock, so the request threads never interleave halves of two lines.
"""

from __future__ import annotations

import os
import sys
import threading
import time

_out_lock = threading.Lock()


def write_line(stream, line: str) -> None:
    with _out_lock:
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


def write_raw(text: str) -> None:
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
    write_line(stream or sys.stdout, f"{who}{level} {stamp} [{where}] {msg}")


def ulog(msg: str, level: str = "INFO") -> None:
    """A uvicorn-style log line: ``INFO:     message``."""
    write_line(sys.stdout, f"{level + ':':<9} {msg}")
