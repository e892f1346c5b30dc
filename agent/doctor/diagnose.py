"""Turn an engine's (or a unit's) last output lines into one line an operator can act on.

One table, KNOWN: a class of failure is one entry here and one test in tests/unit/test_diagnose.py
with a real excerpt. The launcher uses it for the reason it records when the engine dies;
`vllm-agent doctor` uses it on the journal or the log file, where the agent's and systemd's own
lines (crash loop, start timeout, OOM killer) appear beside the engine's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    reason: str
    hint: str
    # True when retrying cannot help (systemd must not restart): the configuration must change.
    permanent: bool
    kind: str = "exit"  # the class's name in KNOWN: what `doctor --json` reports


@dataclass(frozen=True)
class Known:
    kind: str
    pattern: re.Pattern[str]
    reason: str  # "{line}" is the line that matched
    hint: str
    permanent: bool
    # A symptom names the failure only when no cause shows in the same lines: an EngineDeadError
    # follows the CUDA error that killed the core, a crash loop wraps its last failure.
    symptom: bool = False


def _k(kind: str, pattern: str, reason: str, hint: str, permanent: bool, symptom: bool = False) -> Known:
    return Known(kind, re.compile(pattern), reason, hint, permanent, symptom)


KNOWN: tuple[Known, ...] = (
    # argparse: an unknown or malformed engine flag exits 2 at once, every time.
    _k(
        "bad-args",
        r"error: (unrecognized arguments|argument --|the following arguments are required)",
        "the engine refused its command line: {line}",
        "fix args (or [engine] command) in models.d/NAME.toml; 'vllm-agent render NAME' shows the command line",
        True,
    ),
    _k(
        "port-taken",
        r"Errno 98\]|Address already in use|address already in use|port \d+ on \S+ is taken by",
        "the engine's port is already in use",
        "choose another port in models.d/NAME.toml or stop the process holding it",
        True,
    ),
    # huggingface_hub: GatedRepoError "Cannot access gated repo for url ..." (401 or 403).
    _k(
        "gated",
        r"GatedRepoError|Cannot access gated repo|Access to model .* is restricted",
        "the model is gated and no valid Hugging Face token was given",
        "accept the license on the Hub and put the token in the credentials directory as hf_token",
        True,
    ),
    # huggingface_hub's RepositoryNotFoundError (a 401 for a missing repo too), vLLM's config check.
    _k(
        "model-not-found",
        r"RepositoryNotFoundError|Repository Not Found for url|Invalid repository ID or local directory|"
        r"model not found:|ModelNotFound",
        "the model was not found: {line}",
        "check the model id or path in models.d/NAME.toml; a private repo needs hf_token in the credentials directory",
        True,
    ),
    _k(
        "gpu-memory-at-start",
        r"Free memory on device .* less than desired GPU memory utilization|not enough free GPU memory",
        "not enough free GPU memory for gpu_memory_utilization",
        "lower gpu_memory_utilization or free the GPU ('vllm-agent gpus' shows who holds it)",
        True,
    ),
    _k(
        "gpu-oom",
        r"CUDA out of memory|OutOfMemoryError|HIP out of memory",
        "the engine ran out of GPU memory",
        "lower max_model_len or gpu_memory_utilization, or use more GPUs",
        True,
    ),
    # torch's CUDA init, the CUDA runtime, NVML: a userspace library newer than the kernel driver.
    _k(
        "driver-mismatch",
        r"NVIDIA driver on your system is too old|CUDA driver version is insufficient|"
        r"Driver/library version mismatch|cudaErrorInsufficientDriver|no kernel image is available",
        "the CUDA/driver versions do not match: {line}",
        "install a driver that supports the engine's CUDA build (or a vLLM/torch build for this driver); "
        "reboot after a driver upgrade",
        False,
    ),
    # vLLM's pynccl wrapper: "RuntimeError: NCCL error: unhandled cuda error"; torch: DistBackendError.
    _k(
        "nccl",
        r"NCCL error|DistBackendError|ncclUnhandledCudaError|ncclSystemError",
        "the GPUs could not talk to each other (NCCL): {line}",
        "check the GPUs and their links (nvidia-smi topo -m); NCCL_DEBUG=INFO in env shows more; "
        "NCCL_P2P_DISABLE=1 works around broken peer-to-peer",
        False,
    ),
    _k(
        "model-files",
        r"(No such file or directory|does not appear to have a file named|is not a valid model|"
        r"Can't load the configuration|Error while deserializing|SafetensorError|HeaderTooLarge)",
        "the engine could not load the model files",
        "check the model directory (vllm-agent validate) or re-download it",
        True,
    ),
    # systemd: "A process of this unit has been killed by the OOM killer."; the kernel's own line.
    _k(
        "oom-killed",
        r"killed by the OOM killer|Failed with result 'oom-kill'|Out of memory: Killed process|oom-kill",
        "the kernel's OOM killer ended it (host memory, not GPU memory)",
        "give the host more memory, run fewer deployments on it, or lower swap_space/cpu_offload_gb in args",
        False,
    ),
    # The launcher's own reasons (agent/unit/launcher.py) and systemd's.
    _k(
        "test-failed",
        r"post-start test .* failed|post-start tests did not finish",
        "{line}",
        "see 'vllm-agent logs NAME' for the test's output; 'vllm-agent test NAME' reruns it",
        True,
    ),
    _k(
        "start-timeout",
        r"not ready after startup\.timeout|start operation timed out|Failed with result 'timeout'|the engine stalled|"
        r"start or stop timeout passed",
        "the engine did not become ready in time: {line}",
        "raise [startup] timeout (or stall_timeout) in models.d/NAME.toml if the model needs longer; "
        "'vllm-agent logs NAME' shows where loading stopped",
        False,
    ),
    _k(
        "engine-dead",
        r"EngineDeadError|EngineCore encountered an issue",
        "the engine's core died (EngineDeadError)",
        "its cause is above it in 'vllm-agent logs NAME' (a GPU or driver fault, a bug: report it to vLLM)",
        False,
        symptom=True,
    ),
    _k(
        "crash-loop",
        r"crash-loop:|Start request repeated too quickly|Failed with result 'start-limit-hit'|start limit (was )?hit",
        "crash loop: {line}",
        "fix the cause, then 'vllm-agent start NAME' resets it",
        True,
        symptom=True,
    ),
)


def classify(lines: Sequence[str]) -> tuple[Known, str] | None:
    """The known class of the newest line that names a cause, else of the newest symptom."""
    symptom: tuple[Known, str] | None = None
    for raw in reversed(lines):
        line = plain(raw)
        for known in KNOWN:
            if known.pattern.search(line):
                if not known.symptom:
                    return known, line
                symptom = symptom or (known, line)
                break
    return symptom


def diagnose(lines: Sequence[str], returncode: int | None) -> Diagnosis:
    found = classify(lines)
    if found is not None:
        known, line = found
        return Diagnosis(known.reason.format(line=_clip(line)), known.hint, known.permanent, known.kind)
    last = _last_error_line(lines)
    status = f"status {returncode}" if returncode is not None and returncode >= 0 else f"signal {-(returncode or 0)}"
    reason = f"the engine exited with {status}" + (f": {last}" if last else "")
    return Diagnosis(reason, "see 'vllm-agent logs NAME' for the engine's output", False)


def plain(line: str) -> str:
    """The agent's own JSON log lines ("<3>{...}", as in a log file or the journal) as their words."""
    start = line.find('{"')
    if start < 0:
        return line
    try:
        record = json.loads(line[start:])
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    words = record.get("reason") or record.get("error") or record.get("event")
    return str(words) if words else line


def _clip(line: str) -> str:
    return line.strip()[-200:]


def _last_error_line(lines: Sequence[str]) -> str:
    for line in reversed(lines):
        text = plain(line).strip()
        if re.search(r"(Error|Exception|error:|ERROR)", text):
            return text[-200:]
    return ""
