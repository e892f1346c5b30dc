"""Turn an engine's last output lines into one line an operator can act on."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    reason: str
    hint: str
    # True when retrying cannot help (systemd must not restart): the configuration must change.
    permanent: bool


# (pattern, reason, hint, permanent); "{line}" in a reason is the engine's line that matched.
_KNOWN: list[tuple[re.Pattern[str], str, str, bool]] = [
    (
        # argparse: an unknown or malformed engine flag exits 2 at once, every time.
        re.compile(r"error: (unrecognized arguments|argument --|the following arguments are required)"),
        "the engine refused its command line: {line}",
        "fix args (or [engine] command) in models.d/NAME.toml; 'vllm-agent render NAME' shows the command line",
        True,
    ),
    (
        re.compile(r"Errno 98\]|Address already in use"),
        "the engine's port is already in use",
        "choose another port in models.d/NAME.toml or stop the process holding it",
        True,
    ),
    (
        re.compile(r"GatedRepoError|401 Client Error|Access to model .* is restricted"),
        "the model is gated and no valid Hugging Face token was given",
        "accept the license on the Hub and put the token in the credentials directory as hf_token",
        True,
    ),
    (
        re.compile(r"Free memory on device .* less than desired GPU memory utilization"),
        "not enough free GPU memory for gpu_memory_utilization",
        "lower gpu_memory_utilization or free the GPU",
        True,
    ),
    (
        re.compile(r"CUDA out of memory|OutOfMemoryError"),
        "the engine ran out of GPU memory",
        "lower max_model_len or gpu_memory_utilization, or use more GPUs",
        True,
    ),
    (
        re.compile(
            r"(No such file or directory|does not appear to have a file named|is not a valid model|"
            r"Can't load the configuration|Error while deserializing|SafetensorError|HeaderTooLarge)"
        ),
        "the engine could not load the model files",
        "check the model directory (vllm-agent validate) or re-download it",
        True,
    ),
]


def diagnose(lines: Sequence[str], returncode: int | None) -> Diagnosis:
    for line in reversed(lines):
        for pattern, reason, hint, permanent in _KNOWN:
            if pattern.search(line):
                return Diagnosis(reason.format(line=line.strip()[-200:]), hint, permanent)
    last = _last_error_line(lines)
    status = f"status {returncode}" if returncode is not None and returncode >= 0 else f"signal {-(returncode or 0)}"
    reason = f"the engine exited with {status}" + (f": {last}" if last else "")
    return Diagnosis(reason, "see 'vllm-agent logs NAME' for the engine's output", False)


def _last_error_line(lines: Sequence[str]) -> str:
    for line in reversed(lines):
        text = line.strip()
        if re.search(r"(Error|Exception|error:|ERROR)", text):
            return text[-200:]
    return ""
