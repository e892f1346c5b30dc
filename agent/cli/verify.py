"""`vllm-agent verify NAME`: check a deployment's local copy of its model now, with progress.

Never downloads: the source verifies what is already on this host. An `hf` deployment's
snapshot is in the Hugging Face cache layout, so the `cache` source verifies it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Coroutine
from typing import Any

from ..config.directory import Config
from ..errors import AgentError, PluginError
from ..plugin_api import Progress, VerifiedModel, VerifyingSource
from ..pluginhost.manager import Plugins

HUB_LAYOUT_SOURCES = ("hf",)  # sources whose copies the `cache` source can find and verify


def verify(config: Config, plugins: Plugins, name: str, progress: Progress, *, as_json: bool, force: bool) -> int:
    deployment = config.deployment(name)
    source = _verifier(plugins, deployment.source_name)
    head = {"deployment": name, "model": deployment.model, "source": deployment.source_name}
    try:
        result = _run(source.verify(deployment, progress, force=force))
    except AgentError as err:
        if not as_json:
            raise
        _print({"ok": False, **head, "error": {"code": err.code, "message": err.message, "hint": err.hint}})
        return 1
    if as_json:
        _print({"ok": True, **head, **dataclasses.asdict(result), "path": str(result.path)})
    else:
        fresh = ""
        if result.checksums:
            fresh = f"; {result.hashed} hashed now, {result.cached} unchanged since the last verify"
        print(f"ok: {name}: {result.path} ({result.summary}{fresh})")
    return 0


def _run(work: Coroutine[Any, Any, VerifiedModel]) -> VerifiedModel:
    """Not asyncio.run(): on Ctrl-C it would wait for the hashing threads to read every byte.
    Nothing is half-written at that point (the hash cache is saved whole, after hashing)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(work)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        sys.stderr.flush()
        os._exit(130)


def _verifier(plugins: Plugins, source_name: str) -> VerifyingSource:
    sources = plugins.model_sources()
    source = sources.get(source_name)
    if not isinstance(source, VerifyingSource) and source_name in HUB_LAYOUT_SOURCES:
        source = sources.get("cache")
    if not isinstance(source, VerifyingSource):
        raise PluginError(
            f"source {source_name!r} cannot verify a model on demand",
            hint="its models are checked when the deployment starts",
        )
    return source


def _print(data: dict) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
