#!/usr/bin/env python3
"""Pull benchmark (issue 11): `vllm-agent pull` against `hf download` of the same repository.

Both download the same repository (only files the engine needs: config, tokenizer, safetensors
shards and their index, so both fetch the same bytes) from the fake Hub (tests/fakes/fake_hub.py,
real HTTP on 127.0.0.1, served from memory) into a fresh cache each run, in /dev/shm when it has
room (the disk's noise stays out). The runs alternate which tool goes first. The figure is the
wall time of the whole command, start-up included, and bytes / wall time. Target: pull at least
0.95 x the throughput of `hf download`.

Usage: ``.venv/bin/python bench/pull.py [--runs 3] [--shards 4] [--shard-mb 75]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fakes.fake_hub import FakeHub, FakeRepo, model_files  # noqa: E402

MODEL = "bench/pull-model"
BIN = Path(sys.executable).parent


def scratch(size: int) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 3 * size:
        return Path(tempfile.mkdtemp(prefix="vllm-agent-pull-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="vllm-agent-pull-"))


def run_pull(hub: FakeHub, where: Path) -> float:
    conf = where / "conf"
    conf.mkdir(parents=True)
    (conf / "agent.toml").write_text(f'cache_dir = "{where / "cache"}"\nstate_dir = "{where / "state"}"\n')
    return timed([str(BIN / "vllm-agent"), "--config-dir", str(conf), "pull", MODEL], hub)


def run_hf(hub: FakeHub, where: Path) -> float:
    return timed([str(BIN / "hf"), "download", MODEL, "--cache-dir", str(where / "cache")], hub)


def timed(command: list[str], hub: FakeHub) -> float:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-mb", type=int, default=75)
    args = parser.parse_args()
    files = model_files(args.shards, args.shard_mb * 1024 * 1024)
    for name in ("README.md", ".gitattributes"):
        files.pop(name)  # hf download takes every file; pull only the engine's: keep them equal
    size = sum(len(data) for data in files.values())
    base = scratch(size)
    tools = {"vllm-agent pull": run_pull, "hf download": run_hf}
    times: dict[str, list[float]] = {name: [] for name in tools}
    print(f"repository: {len(files)} files, {size / 1e6:.0f} MB; scratch {base}; load {os.getloadavg()[0]:.2f}")
    try:
        with FakeHub({MODEL: FakeRepo(files)}) as hub:
            for run in range(args.runs):
                order = list(tools) if run % 2 == 0 else list(reversed(tools))
                for name in order:
                    where = base / f"{run}-{name.split()[0]}"
                    took = tools[name](hub, where)
                    cached = sum(
                        p.stat().st_size for p in (where / "cache").rglob("*") if p.is_file() and "blobs" in p.parts
                    )
                    assert cached >= size, f"{name} left {cached} of {size} bytes"
                    times[name].append(took)
                    print(f"run {run + 1} {name:<16} {took:6.2f} s  {size / took / 1e6:7.0f} MB/s")
                    shutil.rmtree(where)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print()
    print("| tool | runs | median wall s | median MB/s | best MB/s |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        print(
            f"| {name} | {len(values)} | {statistics.median(values):.2f} | "
            f"{size / statistics.median(values) / 1e6:.0f} | {size / min(values) / 1e6:.0f} |"
        )
    ratio = statistics.median(times["hf download"]) / statistics.median(times["vllm-agent pull"])
    print(f"\npull / hf download throughput (medians): {ratio:.2f} x (target >= 0.95)")


if __name__ == "__main__":
    main()
