"""A live progress line on a terminal; plain lines, one per change, elsewhere."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
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
