"""The counters behind ``/metrics``, in vLLM 0.32's Prometheus text: its metric names, help texts,
``model_name``/``engine`` labels and histogram buckets (vllm/v1/metrics/loggers.py). Counters
move per token, as vLLM's move per engine step.
"""

from __future__ import annotations

TTFT_BUCKETS = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
]
E2E_BUCKETS = [
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
]


class Histogram:
    def __init__(self, buckets: list[float]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class Counters:
    """Everything ``/metrics`` counts over the server's life; the caller serializes access."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished: dict[str, int] = {}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    def render(self, model_name: str, running: int) -> str:
        """The Prometheus text, with ``running`` requests in the batch."""
        labels = f'model_name="{_prom_escape(model_name)}",engine="0"'
        lines: list[str] = []

        def metric(mname: str, mtype: str, help_: str, samples: list[tuple[str, str, float]]):
            lines.append(f"# HELP {mname} {help_}")
            lines.append(f"# TYPE {mname} {mtype}")
            for suffix, extra, value in samples:
                lab = labels + ("," + extra if extra else "")
                lines.append(f"{mname}{suffix}{{{lab}}} {_prom_value(value)}")

        metric(
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            [("", "", running)],
        )
        metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", [("", "", 0)])
        metric(
            "vllm:kv_cache_usage_perc",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            [("", "", min(1.0, 0.05 * running))],
        )
        metric(
            "vllm:prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            [("", "", self.prompt_tokens)],
        )
        metric(
            "vllm:generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            [("", "", self.generation_tokens)],
        )
        metric(
            "vllm:request_success_total",
            "counter",
            "Count of successfully processed requests.",
            [("", f'finished_reason="{r}"', self.finished.get(r, 0)) for r in ("stop", "length", "abort")],
        )
        for mname, help_, hist in (
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", self.ttft),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", self.e2e),
        ):
            samples = [("_bucket", f'le="{_prom_value(b)}"', c) for b, c in zip(hist.buckets, hist.counts, strict=True)]
            samples.append(("_bucket", 'le="+Inf"', hist.count))
            samples.append(("_count", "", hist.count))
            samples.append(("_sum", "", hist.total))
            metric(mname, "histogram", help_, samples)
        return "\n".join(lines) + "\n"


def _prom_value(value: float) -> str:
    return repr(float(value))


def _prom_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
