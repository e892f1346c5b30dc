"""The gateway's Prometheus metrics, by deployment, and its access log (never a prompt)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any, TextIO

# Time to first byte of the answer, seconds (the engine's queueing and prefill plus ours).
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COUNTERS = {
    "requests": "Requests answered, by deployment and HTTP status ('' deployment: none could answer).",
    "migrations": "Streams continued on another engine after theirs died, by the deployment continued on.",
    "fallbacks": "Requests answered by a fallback deployment rather than the model's own pool.",
    "retries": "Attempts that failed before the first byte and were tried elsewhere, by the failed deployment.",
    "cancellations": "Requests whose client disconnected first; the upstream request was aborted.",
    "migration_failures": "Streams that ended with an error event: not continuable, or the limit was reached.",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


class Metrics:
    def __init__(self) -> None:
        self.counts: dict[str, Counter[tuple[str, ...]]] = {name: Counter() for name in COUNTERS}
        self.ttft: dict[str, list[int]] = {}  # deployment -> bucket counts (+Inf last)
        self.ttft_sum: Counter[str] = Counter()

    def count(self, name: str, *labels: str) -> None:
        self.counts[name][labels] += 1

    def first_byte(self, deployment: str, seconds: float) -> None:
        buckets = self.ttft.setdefault(deployment, [0] * (len(TTFT_BUCKETS) + 1))
        for i, bound in enumerate(TTFT_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
                break
        else:
            buckets[-1] += 1
        self.ttft_sum[deployment] += seconds

    def render(self) -> str:
        lines: list[str] = []
        for name, text in COUNTERS.items():
            metric = f"vllm_agent_gateway_{name}_total"
            lines += [f"# HELP {metric} {text}", f"# TYPE {metric} counter"]
            for labels, value in sorted(self.counts[name].items()):
                names = ("deployment", "code")[: len(labels)]
                shown = ",".join(f'{k}="{_label(v)}"' for k, v in zip(names, labels, strict=True))
                lines.append(f"{metric}{{{shown}}} {value}")
        metric = "vllm_agent_gateway_time_to_first_byte_seconds"
        lines += [f"# HELP {metric} Time from request to the first byte of the answer.", f"# TYPE {metric} histogram"]
        for deployment, buckets in sorted(self.ttft.items()):
            label = f'deployment="{_label(deployment)}"'
            total = 0
            for bound, count in zip((*TTFT_BUCKETS, "+Inf"), buckets, strict=True):
                total += count
                lines.append(f'{metric}_bucket{{{label},le="{bound}"}} {total}')
            lines.append(f"{metric}_sum{{{label}}} {self.ttft_sum[deployment]:.6f}")
            lines.append(f"{metric}_count{{{label}}} {total}")
        return "\n".join(lines) + "\n"


class AccessLog:
    """One JSON line per request on stdout (the journal): who, which model and deployment, the
    status and timings. Prompts and answers are never written. Flushed once per loop turn."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self._buffer: list[str] = []

    def write(self, **fields: Any) -> None:
        if not self.enabled:
            return
        fields = {"at": round(time.time(), 3), "event": "request", **fields}
        if not self._buffer:
            import asyncio

            asyncio.get_running_loop().call_soon(self.flush)
        self._buffer.append("<6>" + json.dumps(fields, separators=(",", ":")))

    def flush(self) -> None:
        if self._buffer:
            try:
                self.stream.write("\n".join(self._buffer) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._buffer.clear()
