"""Post-start tests: run the deployment's [[tests]] before it may be called ready."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from structlog.typing import FilteringBoundLogger

from ..config.schema import Deployment, TestSpec
from ..errors import AgentError
from ..plugin_api import EngineTarget, TestContext, TestOutcome
from ..pluginhost.manager import Plugins

DEFAULT_RUNNER = "openai-smoke"


class TestsFailed(AgentError):
    __test__ = False
    code = "tests.failed"

    def __init__(self, message: str, outcomes: Sequence[TestOutcome], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.outcomes = list(outcomes)

    def as_records(self) -> list[dict[str, Any]]:
        return [asdict(outcome) for outcome in self.outcomes]


async def run_spec(plugins: Plugins, target: EngineTarget, spec: TestSpec, context: TestContext) -> list[TestOutcome]:
    """One [[tests]] entry, bounded by its timeout; failures are outcomes, never exceptions."""
    label = spec.name or spec.runner
    runner = plugins.test_runner(spec.runner)
    started = time.monotonic()
    try:
        return list(await asyncio.wait_for(runner.run(target, spec, context), spec.timeout))
    except TimeoutError:
        detail = f"timed out after {spec.timeout:g}s"
    except AgentError as err:
        detail = err.message
    return [TestOutcome(name=label, ok=False, detail=detail, duration=time.monotonic() - started)]


def test_specs(deployment: Deployment, plugins: Plugins) -> list[TestSpec]:
    """The deployment's tests; when it says nothing, the smoke test if that is installed."""
    if deployment.tests is not None:
        return list(deployment.tests)
    return [TestSpec(runner=DEFAULT_RUNNER)] if DEFAULT_RUNNER in plugins.test_runners() else []


async def run_post_start_tests(
    plugins: Plugins,
    target: EngineTarget,
    deployment: Deployment,
    context: TestContext,
    *,
    log: FilteringBoundLogger,
    progress: Callable[[str], None] = lambda _: None,
) -> list[TestOutcome]:
    """Run every spec in order; raise TestsFailed naming the first failing check."""
    outcomes: list[TestOutcome] = []
    for spec in test_specs(deployment, plugins):
        progress(f"running post-start tests: {spec.name or spec.runner}")
        results = await run_spec(plugins, target, spec, context)
        for outcome in results:
            log.info(
                "test", test=outcome.name, ok=outcome.ok, detail=outcome.detail, seconds=round(outcome.duration, 3)
            )
            if outcome.output:
                # The whole output goes to the deployment's log; the status gets one line.
                print(outcome.output, flush=True)
        outcomes += results
        failed = [outcome for outcome in results if not outcome.ok]
        if failed:
            first = failed[0]
            raise TestsFailed(
                f"post-start test {first.name} failed: {first.detail}",
                outcomes,
                hint=f"see 'vllm-agent logs {deployment.name}' for its output; "
                f"'vllm-agent test {deployment.name}' reruns it",
            )
    return outcomes
