"""A live progress line on a terminal; plain lines, one per change, elsewhere.

A download reports a ``Transfer``: its text (``downloading 3.2/16.1 GB at 45 MB/s, ...``) is what
`systemctl status` and logs show; on a terminal the line also gets a bar.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
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


# What the engine is doing while it loads, from the lines real vLLM prints (strings from vLLM
# 0.32's sources, named per entry), newest line first: the launcher puts it in the unit's status
# text, which `start` shows, instead of the engine's last raw line.
_PHASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), text)
    for pattern, text in (
        # model_executor/model_loader/weight_utils.py: the tqdm bar "...: 38% Completed | 3/8 [..]"
        (r"Loading (?:safetensors|pt|np_cache) checkpoint shards.*?\|\s*(\d+)/(\d+)", "loading weights {0}/{1} shards"),
        # v1/worker/gpu_model_runner.py: "Capturing CUDA graphs (decode, FULL): 45%|...| 30/67"
        (r"Capturing CUDA graphs.*?\|\s*(\d+)/(\d+)", "capturing CUDA graphs {0}/{1}"),
        (r"Graph capturing finished", "warming up"),
        # v1/engine/core.py, entrypoints: the engine is up, the HTTP server is coming
        (
            r"init engine \(profile, create kv cache, warmup model\) took|Starting vLLM API server",
            "starting the API server",
        ),
        # cpu_model_runner.py / gpu_worker.py / model_executor/warmup: "Warming up model for the compilation..."
        (r"Warming up|warming up model", "warming up"),
        # v1/worker/gpu_worker.py, v1/core/kv_cache_utils.py
        (
            r"Available KV cache memory|KV cache size: \S+ tokens|Initial profiling/warmup run took",
            "sizing the KV cache",
        ),
        # compilation/monitor.py and backends.py
        (
            r"Starting torch\.compile|Dynamo bytecode transform time|Compiling a graph for|torch\.compile|"
            r"Directly load the compiled graph",
            "compiling",
        ),
        # model_loader/default_loader.py, gpu_model_runner.py
        (r"Loading weights took|Model loading took", "weights loaded"),
        (r"Starting to load model", "loading the model"),
    )
)


def engine_phase(lines: Sequence[str]) -> str:
    """The load phase with its figures ("loading weights 3/8 shards"), or "" when no line says."""
    for line in reversed(lines):
        for pattern, text in _PHASES:
            found = pattern.search(line)
            if found:
                return text.format(*found.groups())
    return ""
