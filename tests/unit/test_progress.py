"""The progress line: live on a terminal, quiet lines in a log."""

from __future__ import annotations

import io

import pytest
from vllm_agent.progress import ProgressLine, engine_phase


def test_a_log_gets_a_line_per_real_change_not_per_tick() -> None:
    out = io.StringIO()
    progress = ProgressLine(out)
    for second in range(5):
        progress(f"waiting for health: engine loading ({second}s)")
    progress("running post-start tests: openai-smoke")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("engine loading (0s)") and lines[1].endswith("running post-start tests: openai-smoke")


# Lines as real vLLM 0.32 prints them (format strings from its sources, named in agent/progress.py).
SHARDS = "Loading safetensors checkpoint shards:  38% Completed | 3/8 [00:02<00:03,  1.23it/s]"
GRAPHS = "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  45%|████▌     | 30/67 [00:03<00:04,  9.10it/s]"


@pytest.mark.parametrize(
    ("lines", "phase"),
    [
        (
            ["(Worker pid=1) INFO 11-30 07:15:38 [cpu_model_runner.py:68] Starting to load model /m..."],
            "loading the model",
        ),
        (["INFO starting", SHARDS], "loading weights 3/8 shards"),
        (
            [SHARDS, "(EngineCore_DP0 pid=2) INFO 11-30 07:15:38 [core.py:1] Waiting for init message."],
            "loading weights 3/8 shards",
        ),
        ([SHARDS, "INFO 11-30 [monitor.py:40] Starting torch.compile"], "compiling"),
        (["INFO [backends.py:399] Compiling a graph for compile range (1, 8192) takes 12.31 s"], "compiling"),
        (["INFO [gpu_worker.py:760] Available KV cache memory: 61.5 GiB"], "sizing the KV cache"),
        ([GRAPHS], "capturing CUDA graphs 30/67"),
        (["INFO [gpu_model_runner.py:6582] Graph capturing finished in 12 secs, took 0.51 GiB"], "warming up"),
        (["(Worker pid=1) INFO [cpu_model_runner.py:87] Warming up model for the compilation..."], "warming up"),
        (
            ["INFO [core.py:386] init engine (profile, create kv cache, warmup model) took 30.10 seconds"],
            "starting the API server",
        ),
        (["INFO 11-30 07:15:38 [api_server.py:1805] vLLM API server version 0.32.0"], ""),
    ],
)
def test_the_engine_phase_comes_from_vllms_own_lines(lines: list[str], phase: str) -> None:
    assert engine_phase(lines) == phase


def test_phases_with_figures_keep_one_log_line_per_phase() -> None:
    out = io.StringIO()
    progress = ProgressLine(out)
    for done in range(1, 9):
        progress(f"waiting for health: engine loading (3s): {engine_phase([SHARDS.replace('3/8', f'{done}/8')])}")
    progress(f"waiting for health: engine loading (9s): {engine_phase([GRAPHS])}")
    lines = out.getvalue().splitlines()
    assert [line.split(": ", 2)[-1] for line in lines] == ["loading weights 1/8 shards", "capturing CUDA graphs 30/67"]
