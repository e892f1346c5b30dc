"""Health strategies ``http``, ``models``, ``completion`` and ``metrics-stall``.

vLLM's ``/health`` can stay 200 while the engine hangs (shared/FACTS.md), so ``http`` only proves
the API server answers; ``completion`` (one real token) is the only proof the engine works, and
``metrics-stall`` spots a hang cheaply between completions. No check raises for an engine
problem: each returns ``CheckResult(ok=False, detail=...)`` naming what went wrong.
"""

from __future__ import annotations

import abc
import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vllm_agent import hookimpl
from vllm_agent.engine_http import TIMEOUT, HttpError, Response, request
from vllm_agent.plugin_api import AgentSettings, CheckResult, EngineTarget, HealthStrategy

PROMPT = "ping"  # short: the check must cost the engine next to nothing
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class _HttpCheck(abc.ABC):
    """Subclasses implement ``_probe`` and may raise HttpError. Each request has its own
    connection (vllm_agent.engine_http), so a provider holds nothing between checks."""

    name: str
    deep: bool

    async def aclose(self) -> None:  # noqa: B027 - owners close providers; these hold nothing open
        """Nothing to release: no client or connection outlives a check."""

    async def check(self, target: EngineTarget, timeout: float) -> CheckResult:
        start = time.monotonic()
        try:
            async with asyncio.timeout(timeout):  # also bounds what _probe does besides requests
                ok, detail = await self._probe(target, timeout)
        except TimeoutError:
            ok, detail = False, self._timeout_detail(timeout)
        except HttpError as err:
            ok, detail = False, self._timeout_detail(timeout) if err.kind == TIMEOUT else err.reason
        return CheckResult(ok=ok, detail=detail, latency=time.monotonic() - start)

    @abc.abstractmethod
    async def _probe(self, target: EngineTarget, timeout: float) -> tuple[bool, str]:
        """(ok, detail) for one look at the engine; may raise HttpError."""

    def _timeout_detail(self, timeout: float) -> str:
        return f"timed out after {timeout:g}s"

    async def _get(self, url: str, timeout: float, headers: dict[str, str] | None = None) -> Response:
        return await request("GET", url, headers=headers, timeout=timeout)


class HttpCheck(_HttpCheck):
    """``GET /health`` is 200: the API server is up (not that the engine works)."""

    name = "http"
    deep = False

    async def _probe(self, target: EngineTarget, timeout: float) -> tuple[bool, str]:
        response = await self._get(f"{target.url}/health", timeout)
        if response.status == 200:
            return True, "/health 200"
        dead = " (engine dead)" if response.status in (500, 503) else ""
        return False, f"/health answered {response.status}{dead}"


class ModelsCheck(_HttpCheck):
    """The engine lists the served name in ``/v1/models``: the right model is loaded."""

    name = "models"
    deep = False

    async def _probe(self, target: EngineTarget, timeout: float) -> tuple[bool, str]:
        response = await self._get(f"{target.url}/v1/models", timeout, target.headers)
        if response.status != 200:
            return False, f"/v1/models answered {response.status}{_error_text(response)}"
        try:
            ids = [str(item.get("id")) for item in response.json()["data"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            return False, "/v1/models answered 200 without a list of models"
        if target.served_model_name in ids:
            return True, f"serves {target.served_model_name!r}"
        return False, f"{target.served_model_name!r} is not served; the engine serves: {', '.join(ids) or 'nothing'}"


class CompletionCheck(_HttpCheck):
    """One real token from ``/v1/completions``: the only proof the engine generates."""

    name = "completion"
    deep = True

    async def _probe(self, target: EngineTarget, timeout: float) -> tuple[bool, str]:
        body = {"model": target.served_model_name, "prompt": PROMPT, "max_tokens": 1, "temperature": 0}
        response = await request(
            "POST", f"{target.url}/v1/completions", json=body, headers=target.headers, timeout=timeout
        )
        if response.status != 200:
            return False, f"/v1/completions answered {response.status}{_error_text(response)}"
        try:
            choices = response.json()["choices"]
            choices[0]
        except (ValueError, KeyError, TypeError, IndexError):
            return False, "/v1/completions answered 200 without a choice"
        return True, "generated 1 token"

    def _timeout_detail(self, timeout: float) -> str:
        # /health may still be 200 here: say what this most likely means.
        return f"no answer within {timeout:g}s (engine hung?)"


@dataclass
class _Progress:
    tokens: float
    since: float  # when tokens last moved, or the engine was first seen busy
    busy: bool


class MetricsStallCheck(_HttpCheck):
    """Fails when requests are queued or running but ``vllm:generation_tokens_total`` has not
    moved for ``window`` seconds: a hang caught without spending a generation.

    Needs two looks, so it keeps per-URL state as long as the provider lives.
    """

    name = "metrics-stall"
    deep = False

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._seen: dict[str, _Progress] = {}

    async def _probe(self, target: EngineTarget, timeout: float) -> tuple[bool, str]:
        response = await self._get(f"{target.url}/metrics", timeout, target.headers)
        if response.status != 200:
            return False, f"/metrics answered {response.status}"
        samples = parse_metrics(response.text, target.served_model_name)
        missing = [
            m
            for m in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:generation_tokens_total")
            if m not in samples
        ]
        if missing:  # a check that cannot judge must not pass silently
            return False, f"/metrics has no {', '.join(missing)} for model_name={target.served_model_name!r}"
        return self.judge(target.url, samples)

    def judge(self, url: str, samples: dict[str, float]) -> tuple[bool, str]:
        now = self.clock()
        running = int(samples["vllm:num_requests_running"])
        waiting = int(samples["vllm:num_requests_waiting"])
        tokens = samples["vllm:generation_tokens_total"]
        busy = running + waiting > 0
        seen = self._seen.get(url)
        # First look, tokens moved (a restarted engine's counter goes down: movement too), or busy
        # after an idle look: the stall clock starts now, so idle time never counts as a stall.
        if seen is None or tokens != seen.tokens or not (busy and seen.busy):
            seen = self._seen[url] = _Progress(tokens, now, busy)
        load = f"{running} requests running" + (f", {waiting} waiting" if waiting else "")
        if not busy:
            return True, "idle"
        stalled = now - seen.since
        if stalled >= self.window:
            return False, f"{load}, no tokens generated for {stalled:.0f}s"
        return True, f"{load}, tokens last moved {stalled:.0f}s ago"


def parse_metrics(text: str, model_name: str) -> dict[str, float]:
    """Sum each sample over the lines labelled ``model_name=MODEL`` (or without that label);
    several engines (data parallel) each report their own line."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue  # comments (# HELP, # TYPE) and blank lines
        name, labels, value = match.groups()
        found = {key: _unescape(val) for key, val in _LABEL.findall(labels or "")}
        if found.get("model_name", model_name) != model_name:
            continue
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


def _unescape(value: str) -> str:
    return value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def _error_text(response: Response) -> str:
    """vLLM's error message, if the body carries one (401 means a missing or wrong api key)."""
    message: Any = None
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("error")
        message = message or body.get("message")
    except (ValueError, AttributeError):
        pass
    hint = " (api key?)" if response.status == 401 else ""
    return f"{hint}: {str(message)[:200]}" if message else hint


@hookimpl
def agent_health_strategies(settings: AgentSettings) -> Sequence[HealthStrategy]:
    return [HttpCheck(), ModelsCheck(), CompletionCheck(), MetricsStallCheck()]
