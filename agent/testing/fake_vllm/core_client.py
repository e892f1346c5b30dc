"""What the API server knows of its engine (vLLM's EngineCoreClient and AsyncLLM, in one object
shared by the request threads): whether it runs, and the counters its steps move.

Like vLLM's: a SIGSTOPped EngineCore stops every request until SIGCONT; a wedged one (``hang-after``)
never answers again while ``/health`` stays 200; a dead one drops its requests. ``/metrics`` of a
stopped or wedged engine is frozen as it was, since vLLM's gauges come from the core's own stats.
"""

from __future__ import annotations

import threading

from .metrics import Counters


class Engine:
    """What the API server knows of its engine. ``state``: ready; paused (the EngineCore is
    SIGSTOPped: nothing moves until SIGCONT); hung (wedged for good mid-step); dead.

    A paused or hung engine freezes ``/metrics`` as real vLLM's does (its gauges come from the
    engine core's own stats, which stop with it): new requests neither run nor count."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.cond = threading.Condition()
        self.state = "ready"
        self.running = 0
        self.counters = Counters()
        self.served_requests = 0
        self.frozen: str | None = None  # /metrics as it was when the engine stopped moving

    def set_state(self, state: str) -> None:
        with self.cond:
            if self.state == "dead" or self.state == state:
                return
            if state in ("paused", "hung") and self.frozen is None:
                # hang-after wedges the engine in the middle of a step: one request more runs.
                self.frozen = self._render(self.running + (1 if state == "hung" else 0))
            elif state == "ready":
                self.frozen = None
            self.state = state
            self.cond.notify_all()

    def get_state(self) -> str:
        with self.cond:
            return self.state

    def step(self, req: dict, choices: int) -> None:
        """One decode step of ``req`` (``choices`` tokens): wait while the engine cannot run
        (paused, or hung: for ever); a dead engine drops the request. Counted as it happens, as
        vLLM's counters move per step: the request runs, and its prompt is counted, from its first."""
        with self.cond:
            while self.state in ("paused", "hung"):
                self.cond.wait()
            if self.state == "dead":
                raise BrokenPipeError("the engine died")
            if not req.get("_counted"):
                req["_counted"] = True
                self.running += 1
                self.counters.prompt_tokens += sum(req["prompts"]) * req["n"]
            self.counters.generation_tokens += choices

    def finish(self, req: dict, reason: str | None, ttft: float, e2e: float) -> int:
        with self.cond:
            if req.get("_counted"):
                self.running -= 1
            if reason is None:  # aborted (client went away)
                return self.served_requests
            counters = self.counters
            counters.finished[reason] = counters.finished.get(reason, 0) + 1
            counters.ttft.observe(ttft)
            counters.e2e.observe(e2e)
            self.served_requests += 1
            return self.served_requests

    def metrics(self) -> str:
        with self.cond:
            return self.frozen if self.frozen is not None else self._render(self.running)

    def _render(self, running: int) -> str:
        """The Prometheus text; the caller holds ``self.cond``."""
        return self.counters.render(self.cfg["served_model_names"][0], running)
