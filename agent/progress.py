"""A live progress line on a terminal; plain lines, one per change, elsewhere."""

from __future__ import annotations

import re
import shutil
import time
from typing import TextIO


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
            shape = re.sub(r"\d+", "#", text)
            if shape == self._last_shape and now - self._last_line < 10:
                return
            self._last_shape, self._last_line = shape, now
        line = f"[{now - self.started:5.1f}s] {text}"
        if self.tty:
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
