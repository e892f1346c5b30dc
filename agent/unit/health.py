"""One round of health checks, and the count of failed rounds that makes an engine unhealthy.

The unit's launcher runs a round every ``[health] interval`` and acts when ``unhealthy`` turns
true; systemd alone then heals the deployment, no daemon needed. The strategies themselves live in
plugins (``agent_health_strategies``); this module only orders, bounds and counts them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config.schema import HealthSettings
from ..errors import PluginError
from ..plugin_api import CheckResult, EngineTarget, HealthStrategy

# A strategy gets ``timeout`` as its own deadline and a little more from wait_for, so that its
# own detail ("no answer within 5s (engine hung?)") wins; the timeout is the backstop for a strategy
# that ignores its deadline.
GRACE = 0.25


@dataclass(frozen=True)
class RoundResult:
    ok: bool
    failed_check: str | None
    detail: str
    results: list[tuple[str, CheckResult]] = field(default_factory=list)
    consecutive_failures: int = 0
    unhealthy: bool = False  # consecutive_failures >= failure_threshold


class HealthMonitor:
    """Runs ``settings.checks`` in order against one engine, stopping at the first failure.

    ``strategies`` may hold more than the configured checks (all providers, say); each configured
    name must be among them. Deep checks run when ``deep_interval`` has passed since they last
    all passed (every round when it is None).
    """

    def __init__(
        self,
        strategies: Sequence[HealthStrategy],
        settings: HealthSettings,
        target: EngineTarget,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        by_name = {strategy.name: strategy for strategy in strategies}
        missing = [name for name in settings.checks if name not in by_name]
        if missing:
            known = ", ".join(sorted(by_name)) or "none"
            raise PluginError(
                f"health.checks: no health strategy named {', '.join(map(repr, missing))} (available: {known})",
                hint="install the plugin that provides it, or check that it is not blocked in agent.toml",
            )
        self.checks = [by_name[name] for name in settings.checks]
        self.settings = settings
        self.target = target
        self.clock = clock
        self.wall_clock = wall_clock
        self.consecutive_failures = 0
        self._deep_passed_at: float | None = None
        self._last: dict[str, dict[str, Any]] = {}

    def deep_due(self) -> bool:
        # A failed (or never run) deep check stays due every round: otherwise a hung engine would
        # pass the cheap rounds in between and the failure count would never reach the threshold.
        interval = self.settings.deep_interval
        if interval is None or self._deep_passed_at is None:
            return True
        return self.clock() - self._deep_passed_at >= interval

    async def round(self) -> RoundResult:
        started = self.clock()
        run_deep = self.deep_due()
        results: list[tuple[str, CheckResult]] = []
        failed: CheckResult | None = None
        deep_ran = False
        for strategy in self.checks:
            if strategy.deep and not run_deep:
                continue
            deep_ran = deep_ran or strategy.deep
            result = await self._run(strategy)
            results.append((strategy.name, result))
            self._last[strategy.name] = {
                "name": strategy.name,
                "ok": result.ok,
                "detail": result.detail,
                "latency": round(result.latency, 4),
                "at": self.wall_clock(),
            }
            if not result.ok:
                failed = result
                if strategy.deep:
                    self._deep_passed_at = None
                break
        if failed is None and deep_ran:
            self._deep_passed_at = started
        if failed is None:
            self.consecutive_failures = 0
            passed = ", ".join(name for name, _ in results)
            return RoundResult(ok=True, failed_check=None, detail=f"passed: {passed}", results=results)
        self.consecutive_failures += 1
        name = results[-1][0]
        return RoundResult(
            ok=False,
            failed_check=name,
            detail=failed.detail,
            results=results,
            consecutive_failures=self.consecutive_failures,
            unhealthy=self.consecutive_failures >= self.settings.failure_threshold,
        )

    async def _run(self, strategy: HealthStrategy) -> CheckResult:
        timeout = self.settings.timeout
        start = self.clock()
        try:
            async with asyncio.timeout(timeout + GRACE):  # not wait_for: it can swallow a cancel on 3.11
                return await strategy.check(self.target, timeout)
        except TimeoutError:
            return CheckResult(ok=False, detail=f"timed out after {timeout:g}s", latency=self.clock() - start)
        except Exception as err:  # a plugin bug: count it as failed and name it, never kill the launcher
            return CheckResult(
                ok=False, detail=f"the {strategy.name!r} check itself failed: {err!r}", latency=self.clock() - start
            )

    async def aclose(self) -> None:
        """Close the strategies' clients. Providers may be shared between monitors; theirs
        reopen lazily, so closing one monitor does not break another's next round."""
        for strategy in self.checks:
            close = getattr(strategy, "aclose", None)
            if close is not None:
                await close()

    def records(self) -> list[dict[str, Any]]:
        """The latest result of each configured check (deep ones may be from an earlier round),
        in the configured order, for the state file."""
        return [dict(self._last[s.name]) for s in self.checks if s.name in self._last]
