"""A live progress line on a terminal; plain lines, one per change, elsewhere.

A download reports a ``Transfer``: its text (``downloading 3.2/16.1 GB at 45 MB/s, ...``) is what
`systemctl status` and logs show; on a terminal the line also gets a bar.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from typing import TextIO

BAR = 16  # characters of the bar on a terminal


@dataclass(frozen=True)
class Transfer:
    done: int  # bytes of the wanted files on disk, resumed ones included
    total: int
    rate: float  # bytes per second, recently
    files_done: int
    files_total: int
    arrived: int = 0  # bytes received in this run (done less what an earlier run left)

    def text(self) -> str:
        unit, scale = _unit(self.total)
        parts = [f"downloading {self.done / scale:.1f}/{self.total / scale:.1f} {unit} at {rate_text(self.rate)}"]
        if self.rate > 0 and self.done < self.total:
            parts.append(f"ETA {duration_text((self.total - self.done) / self.rate)}")
        parts.append(f"{self.files_done}/{self.files_total} files")
        return ", ".join(parts)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0


class TransferText(str):
    """A progress text that still carries its numbers, for a terminal's bar; to everyone else,
    a plain string."""

    transfer: Transfer

    def __new__(cls, transfer: Transfer, suffix: str = "") -> TransferText:
        made = super().__new__(cls, transfer.text() + suffix)
        made.transfer = transfer
        return made


def _unit(size: float) -> tuple[str, float]:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return unit, scale
    return "KB", 1e3


def rate_text(rate: float) -> str:
    unit, scale = _unit(rate)
    value = rate / scale
    return f"{value:.0f} {unit}/s" if value >= 10 else f"{value:.1f} {unit}/s"


def size_text(size: float) -> str:
    unit, scale = _unit(size)
    return f"{size / scale:.1f} {unit}"


def duration_text(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLine:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._shown = False
        self._last = ""
        self._last_shape = ""
        self._last_line = 0.0

    def __call__(self, text: str) -> None:
        if text == self._last:
            return
        self._last = text
        now = time.monotonic()
        if not self.tty:
            # A log, not a screen: a line when something other than a counter changed, or
            # every 10 s as a sign of life.
            shape = "transfer" if hasattr(text, "transfer") else re.sub(r"\d+", "#", text)
            if shape == self._last_shape and now - self._last_line < 10:
                return
            self._last_shape, self._last_line = shape, now
        line = f"[{now - self.started:5.1f}s] {text}"
        if self.tty:
            transfer = getattr(text, "transfer", None)
            if transfer is not None:  # the bar instead of the clock: the figures fit 80 columns
                filled = int(transfer.fraction * BAR)
                line = f"[{'#' * filled}{'.' * (BAR - filled)}] {transfer.fraction:4.0%} {text}"
            width = max(20, shutil.get_terminal_size().columns - 1)
            self.stream.write("\r\x1b[K" + line[:width])
            self._shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
