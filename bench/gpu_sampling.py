#!/usr/bin/env python3
"""GPU sampling cost (issue 10): the daemon's per-device metrics with 8 fake NVIDIA devices.

The real nvml backend reads every device (memory, utilisation, temperature, power, MIG mode,
processes, ECC, retired pages, remapped rows) through the fake pynvml (agent/testing/pynvml_fake.py,
pynvml's own structures) and GpuSampler renders the Prometheus text. The sampler reads at most
every 5 s; a scrape in between only renders. This measures the CPU time (process_time) of both
and states it as a share of one core when the daemon samples every 5 s and is scraped every
second (the worst case). With a real driver each NVML call costs more (an ioctl): the figure is
the agent's own Python share, not NVML's.

Usage: ``.venv/bin/python bench/gpu_sampling.py [--reads 2000] [--append bench/RESULTS.md]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from vllm_agent.gpu.metrics import INTERVAL, GpuSampler  # noqa: E402
from vllm_agent.testing.pynvml_fake import FakeGpu, FakeNvml  # noqa: E402
from vllm_agent_plugins.gpu_nvml import NvmlBackend  # noqa: E402

GiB = 1024**3
DEVICES = 8


def devices() -> list[FakeGpu]:
    return [
        FakeGpu(used=(10 + i) * GiB, utilisation=50 + i, temperature=60 + i, processes=[(1000 + i, 9 * GiB)])
        for i in range(DEVICES)
    ]


def cpu_per_call(call, repeats: int) -> list[float]:  # noqa: ANN001 - any callable
    """CPU seconds of each of ``repeats`` rounds of 10 calls, per call."""
    rounds = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(10):
            call()
        rounds.append((time.process_time() - started) / 10)
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000, help="samples read from the devices (default 2000)")
    parser.add_argument("--append", type=Path, help="append a section to this results file")
    args = parser.parse_args()

    now = [0.0]
    backend = NvmlBackend(FakeNvml(devices()))
    sampler = GpuSampler(lambda: {"nvml": backend}, clock=lambda: now[0])
    assert backend.unavailable() is None and len(backend.snapshot()) == DEVICES

    def fresh() -> None:  # each call a real read of all 8 devices, as every 5 s in the daemon
        now[0] += INTERVAL
        sampler.metrics()

    load_before = os.getloadavg()
    read = cpu_per_call(fresh, max(args.reads // 10, 1))
    cached = cpu_per_call(sampler.metrics, max(args.reads // 10, 1))  # a scrape within the 5 s
    load_after = os.getloadavg()
    read_s, cached_s = statistics.median(read), statistics.median(cached)
    lines = len(sampler.metrics().splitlines())
    share = (read_s + (INTERVAL - 1) * cached_s) / INTERVAL  # per second: one read in 5 s, scrapes each second
    figures = [
        ("devices", f"{DEVICES}"),
        ("samples read", f"{sampler.reads}"),
        ("metric lines per scrape", f"{lines}"),
        ("CPU per read of all devices + render, median", f"{read_s * 1e3:.3f} ms (p90 {_p90(read) * 1e3:.3f} ms)"),
        ("CPU per cached scrape (render only), median", f"{cached_s * 1e3:.3f} ms (p90 {_p90(cached) * 1e3:.3f} ms)"),
        ("share of one core: read every 5 s only", f"{read_s / INTERVAL * 100:.3f} %"),
        ("share of one core: read every 5 s + scrape every 1 s", f"{share * 100:.3f} %"),
        ("target", "under 1 % of one core"),
    ]
    for name, value in figures:
        print(f"{name}: {value}")
    if args.append:
        _append(args.append, figures, load_before, load_after, args.reads)
    return 0 if share < 0.01 else 1


def _p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9)]


def _append(
    path: Path, figures: list[tuple[str, str]], before: tuple[float, ...], after: tuple[float, ...], reads: int
) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        "",
        "## GPU sampling cost (issue 10)",
        "",
        f"`.venv/bin/python bench/gpu_sampling.py --reads {reads}`: {stamp}; nproc {os.cpu_count()}; "
        f"load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, after "
        f"{after[0]:.2f} {after[1]:.2f} {after[2]:.2f} (other work was running on the same 2 cores). "
        "8 fake NVIDIA devices through the real nvml backend and pynvml's own structures; CPU time "
        "(process_time) of the agent's Python, not of a real driver's ioctls.",
        "",
        "| figure | value |",
        "| --- | ---: |",
        *[f"| {name} | {value} |" for name, value in figures],
        "",
    ]
    with path.open("a") as stream:
        stream.write("\n".join(text))


if __name__ == "__main__":
    sys.exit(main())
