"""`vllm-agent pull NAME | ORG/MODEL[@REVISION]`: download a model ahead of time.

The same code path as a unit's start (the ``hf`` source), asking the Hub what the revision is
now. Progress: a bar on a terminal, a line every 10 s otherwise. Ctrl-C stops the workers between
two chunks and exits 130: whole files are in the snapshot, the rest waits in ``*.incomplete``
files that the next pull resumes, and nothing partial can pass as a complete snapshot.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..config.directory import Config
from ..config.names import model_id_problem
from ..config.schema import Deployment
from ..errors import AgentError, InvalidModelId
from ..pluginhost.manager import Plugins
from ..progress import ProgressLine, rate_text, size_text

STOP_GRACE = 2.0  # seconds the workers get to stop between chunks after Ctrl-C


def pull_target(config: Config, target: str) -> Deployment:
    """A deployment by name, or ``ORG/MODEL[@REVISION]`` as a deployment of its own."""
    if "/" not in target:
        deployment = config.deployment(target)
        if deployment.source_name != "hf":
            raise AgentError(
                f"{target} takes its model from the source {deployment.source_name!r}: nothing to pull",
                hint="pull downloads models of the hf source (an 'org/name' model id)",
            )
        return deployment
    model, _, revision = target.partition("@")
    problem = model_id_problem(model)
    if problem or not revision and target.endswith("@"):
        raise InvalidModelId(f"{target!r}: {problem or 'empty revision'}", hint="write ORG/MODEL or ORG/MODEL@REVISION")
    return Deployment(name="pull", model=model, revision=revision or None)


def run_pull(config: Config, plugins: Plugins, target: str, *, as_json: bool) -> int:
    """Runs to the end and leaves with os._exit: a worker stuck in a socket read must not hold
    the exit (the interpreter would join asyncio's executor threads)."""
    deployment = pull_target(config, target)
    progress = ProgressLine(sys.stderr)
    loop = asyncio.new_event_loop()
    task = loop.create_task(pull(plugins, deployment, progress))
    try:
        summary = loop.run_until_complete(task)
        code = 0
    except KeyboardInterrupt:
        task.cancel()  # the source's cleanup stops its workers between two chunks
        loop.run_until_complete(asyncio.wait({task}, timeout=STOP_GRACE))
        progress.clear()
        print(f"interrupted: run 'vllm-agent pull {target}' again to resume", file=sys.stderr)
        return _leave(130)
    except AgentError as err:
        progress.clear()
        print(err.one_line(), file=sys.stderr)
        return _leave(err.exit_code)
    progress.clear()
    if as_json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        got = f"{size_text(summary['downloaded'])} downloaded in {summary['seconds']:.1f}s"
        if summary["downloaded"]:
            got += f" ({rate_text(summary['rate'])})"
        print(
            f"{summary['model']}@{summary['revision_requested']}: commit {summary['revision'][:12]}, "
            f"{summary['files']} files, {size_text(summary['bytes'])}; {got}; {summary['path']}"
        )
    return _leave(code)


async def pull(plugins: Plugins, deployment: Deployment, progress: ProgressLine) -> dict[str, Any]:
    source = plugins.model_source("hf")
    started = time.monotonic()
    resolved = await source.fetch(deployment, progress, refresh=True)  # type: ignore[attr-defined]
    seconds = time.monotonic() - started
    transfer = getattr(getattr(source, "last_transfer", None), "transfer", None)
    downloaded = transfer.arrived if transfer is not None else 0
    files = [item for item in Path(resolved.path).rglob("*") if item.is_file()]
    return {
        "model": deployment.model,
        "revision_requested": deployment.revision or "main",
        "revision": resolved.revision,
        "path": str(resolved.path),
        "files": len(files),
        "bytes": sum(item.stat().st_size for item in files),
        "downloaded": downloaded,
        "seconds": round(seconds, 3),
        "rate": round(downloaded / seconds, 1) if seconds > 0 else 0.0,
    }


def _leave(code: int) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
