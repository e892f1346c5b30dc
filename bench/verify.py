#!/usr/bin/env python3
"""Verify benchmark (issue 11): `vllm-agent verify` of a 1 GB model against `sha256sum` of the
same files, on one core and on two.

The model is generated in a temporary directory: safetensors shards (default 4 x 256 MiB of
random bytes), config, tokenizer, and a SHA256SUMS file, so verify hashes every file. A
`local` deployment points at it. Each round runs, alternating which goes first:

- ``sha256sum FILES`` (coreutils, single-threaded by design),
- ``vllm-agent verify NAME --force --json`` (the whole command: Python start-up, plugin
  loading, the layout checks, then hashing every file, in parallel threads),

pinned with ``taskset -c 0`` (one core) and ``taskset -c 0,1`` (two cores). Both read from the
page cache (warmed first), so this compares hashing, not the disk. Targets: one core no slower
than 1.1 x sha256sum; two cores faster than sha256sum.

Usage: ``.venv/bin/python bench/verify.py [--rounds 3] [--shards 4] [--shard-mib 256]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.model_files import model_files, safetensors_bytes, sha256sums, write_dir  # noqa: E402

AGENT = Path(sys.executable).parent / "vllm-agent"
BLOCK = 1 << 20


def make_model(root: Path, shards: int, shard_mib: int) -> list[Path]:
    files = {name: data for name, data in model_files().items() if not name.endswith(".safetensors")}
    model = write_dir(root / "model", files)
    weight_map = {}
    for number in range(1, shards + 1):
        name = f"model-{number:05d}-of-{shards:05d}.safetensors"
        size = shard_mib * BLOCK
        header = safetensors_bytes({f"layer{number}": size}, data_bytes=0)
        with (model / name).open("wb") as out:
            out.write(header)
            block = os.urandom(BLOCK)
            for index in range(shard_mib):
                out.write(block[index % 251 :] + block[: index % 251])  # no two blocks alike
        weight_map[f"layer{number}"] = name
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    sha256sums(model)
    return sorted(path for path in model.iterdir() if path.name != "SHA256SUMS")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the child's own): CPU is the steadier
    figure on a shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-mib", type=int, default=256)
    args = parser.parse_args()
    if shutil.which("taskset") is None or shutil.which("sha256sum") is None:
        raise SystemExit("needs taskset and sha256sum (util-linux, coreutils)")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("needs two cores")
    root = Path(tempfile.mkdtemp(prefix="verify-bench-"))
    try:
        files = make_model(root, args.shards, args.shard_mib)
        total = sum(path.stat().st_size for path in files)
        conf = root / "conf"
        (conf / "models.d").mkdir(parents=True)
        (conf / "agent.toml").write_text(f'state_dir = "{root / "state"}"\n')
        (conf / "models.d" / "bench.toml").write_text(f'model = "{root / "model"}"\nport = 8999\n')
        env = {**os.environ}
        env.pop("VLLM_AGENT_CONFIG_DIR", None)
        for path in files:  # warm the page cache: hashing is measured, not the disk
            path.read_bytes()
        verify = [str(AGENT), "--config-dir", str(conf), "verify", "bench", "--force", "--json"]
        sums = ["sha256sum", *map(str, files)]
        pins = {"1 core": f"{cores[0]}", "2 cores": f"{cores[0]},{cores[1]}"}
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        load = []
        for round_ in range(args.rounds):
            load.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
            for pin_name, pin in pins.items():
                pair = [("sha256sum", sums), ("vllm-agent verify", verify)]
                for tool, argv in pair if round_ % 2 == 0 else reversed(pair):
                    results.setdefault((pin_name, tool), []).append(timed(["taskset", "-c", pin, *argv], env))
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(f"{when}; {len(files)} files, {total / 2**30:.2f} GiB; rounds {args.rounds}; ", end="")
        print(f"load per round: {' | '.join(load)}")
        print()
        print(
            "| cores | sha256sum wall s | verify wall s | verify / sha256sum (wall) "
            "| sha256sum CPU s | verify CPU s | wall runs (sha256sum; verify) |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for pin_name in pins:
            base, ours = results[(pin_name, "sha256sum")], results[(pin_name, "vllm-agent verify")]
            mb, mo = (statistics.median(run[0] for run in rows) for rows in (base, ours))
            cb, co = (statistics.median(run[1] for run in rows) for rows in (base, ours))
            runs = f"{', '.join(f'{x[0]:.2f}' for x in base)}; {', '.join(f'{x[0]:.2f}' for x in ours)}"
            print(f"| {pin_name} | {mb:.2f} | {mo:.2f} | {mo / mb:.2f} x | {cb:.2f} | {co:.2f} | {runs} |")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
