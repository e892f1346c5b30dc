"""The load phase's output, as vLLM 0.32 prints it on CPU (measured: 26-44 s for a tiny model).

Its phases in its own words: "Starting to load model", the safetensors shards bar (weight_utils.py,
one line per shard, or ``\r``-only redraws under ``cr-progress``), "Loading weights took", the
warm-up. Between them long silences, as real vLLM's weights and compile are; ``quiet-load`` says
nothing until loaded, like a stalled load.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from .logs import vlog, write_raw

SHARDS = 4  # the fake's "checkpoint shards", for the load-phase lines


def load(cfg: dict, engine_core: subprocess.Popen, wait_signal: Callable[[float], int | None]) -> bool:
    """Spend ``--fake-load-time`` loading, printing as vLLM does; stop early when the EngineCore
    died. False when SIGTERM/SIGINT came first (``wait_signal`` waits for one)."""
    load_time = cfg["load_time"]
    modes = cfg["modes"]
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
            write_raw("\r" + bar)
        elif not quiet and done != shown:
            write_raw(bar + "\n")
        if done == SHARDS and shown != SHARDS and not quiet:
            if bar_every is not None:
                write_raw("\n")
            vlog("INFO", "default_loader.py:501", f"Loading weights took {elapsed:.2f} seconds", prefix="(Worker)")
            vlog("INFO", "cpu_model_runner.py:87", "Warming up model for the compilation...", prefix="(Worker)")
        shown = done
        if elapsed >= load_time or engine_core.poll() is not None:
            return True
        if wait_signal(min(bar_every or 0.5, load_time - elapsed)) is not None:
            return False


def loaded(cfg: dict) -> None:
    """The last lines of a load that went through."""
    if "quiet-load" in cfg["modes"]:  # silent while loading, as before: its first words come once loaded
        vlog("INFO", "default_loader.py:501", f"Loading weights took {cfg['load_time']:.2f} seconds", prefix="(Worker)")
    vlog("INFO", "cpu_model_runner.py:91", "Warming up done.", prefix="(Worker)")
