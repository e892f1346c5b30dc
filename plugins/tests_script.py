"""Test runner ``script``: an executable of the operator's, exit status 0 passes.

```toml
[[tests]]
runner = "script"
path = "check-answers.sh"      # relative to CONFIG_DIR/tests.d/, or absolute
args = ["--strict"]            # optional
api_key = true                 # optional: pass the deployment's key as VLLM_API_KEY
timeout = 60
```

The program sees VLLM_AGENT_URL (base URL, no trailing slash), VLLM_AGENT_MODEL (the served
model name), VLLM_AGENT_DEPLOYMENT, and VLLM_API_KEY only when the entry says ``api_key = true``
and the deployment has an api_key credential. It runs in its own process group, which is killed
when it ends or times out.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from vllm_agent import hookimpl
from vllm_agent.plugin_api import AgentSettings, EngineTarget, TestContext, TestOutcome, TestRunner, TestSpec

from ._subprocess import (
    describe_status,
    option_problems,
    own_timeout,
    program_env,
    resolve_path,
    run_program,
    wants_api_key,
)

OPTIONS = ("path", "args", "api_key")


def executable_problem(path: Path) -> str | None:
    if not path.exists():
        return f"path: {path} does not exist"
    if not path.is_file():
        return f"path: {path} is not a file"
    if not os.access(path, os.X_OK):
        return f"path: {path} is not executable (chmod +x)"
    return None


class ScriptRunner:
    name = "script"

    def problems(self, spec: TestSpec, context: TestContext) -> Sequence[str]:
        problems = option_problems(spec, self.name, OPTIONS)
        path = spec.options.get("path")
        if isinstance(path, str) and path:
            problem = executable_problem(resolve_path(path, context))
            if problem:
                problems.append(problem)
        return problems

    async def run(self, target: EngineTarget, spec: TestSpec, context: TestContext) -> Sequence[TestOutcome]:
        label = spec.name or str(spec.options.get("path") or self.name)
        problems = self.problems(spec, context)
        if problems:  # e.g. the file went away since validation
            return [TestOutcome(name=label, ok=False, detail="; ".join(problems))]
        path = resolve_path(spec.options["path"], context)
        limit = own_timeout(spec)
        try:
            finished = await run_program(
                [str(path), *spec.options.get("args", [])],
                env=program_env(target, api_key=wants_api_key(spec)),
                timeout=limit,
                cwd=path.parent,
            )
        except OSError as err:
            detail = f"cannot run {path}: {err.strerror or err}"
            if err.errno == errno.ENOEXEC:
                detail += " (does it start with a #! line?)"
            return [TestOutcome(name=label, ok=False, detail=detail)]
        if finished.timed_out:
            detail = f"timed out after {limit:g}s (process group killed)"
        elif finished.status == 0:
            return [TestOutcome(name=label, ok=True, duration=finished.duration, output=finished.output)]
        else:
            detail = describe_status(finished.status or 0)
        if finished.last_line:
            detail += f": {finished.last_line}"
        return [TestOutcome(name=label, ok=False, detail=detail, duration=finished.duration, output=finished.output)]


@hookimpl
def agent_post_start_tests(settings: AgentSettings) -> Sequence[TestRunner]:
    return [ScriptRunner()]
