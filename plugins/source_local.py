"""Model source ``local``: a model directory already on this host (airgapped use).

Before a unit starts, the directory is verified the way vLLM will read it (plugins/verify.py),
so an operator learns "config.json is missing" or "a Git LFS pointer" now rather than from a
Python traceback minutes into a start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from vllm_agent import hookimpl
from vllm_agent.plugin_api import (
    AgentSettings,
    Deployment,
    LocalModel,
    ModelSource,
    Progress,
    ResolvedModel,
    VerifiedModel,
)

from .verify import check_safetensors, verify_model_dir  # noqa: F401 - check_safetensors: public API
from .verify_hashes import HashCache


class LocalModelSource:
    """Resolves an absolute path to a model directory, after verifying it."""

    name = "local"

    def __init__(self, cache: HashCache | None = None) -> None:
        self.cache = cache or HashCache(None)

    async def resolve(self, deployment: Deployment, progress: Progress) -> ResolvedModel:
        path = Path(deployment.model)
        progress(f"checking model directory {path}")
        verified = await self.verify(deployment, progress)
        return ResolvedModel(path=path, description=f"local directory {path} ({verified.summary})")

    async def verify(self, deployment: Deployment, progress: Progress, *, force: bool = False) -> VerifiedModel:
        return await asyncio.to_thread(
            verify_model_dir,
            Path(deployment.model),
            tokenizer_elsewhere=tokenizer_given(deployment.args),
            cache=self.cache,
            progress=progress,
            force=force,
        )

    def local_models(self, deployments: Sequence[Deployment]) -> list[LocalModel]:
        """The directories that local deployments name (this source has no catalogue of its own)."""
        used: dict[Path, list[str]] = {}
        for deployment in deployments:
            if deployment.source_name == self.name:
                used.setdefault(Path(deployment.model), []).append(deployment.name)
        return [
            LocalModel(
                source=self.name,
                id=str(path),
                revision=None,
                refs=(),
                path=path,
                size=tree_size(path),
                verified=self.cache.verified(path),
                used_by=tuple(sorted(names)),
            )
            for path, names in sorted(used.items())
            if path.is_dir()
        ]


def check_model_dir(
    path: Path,
    *,
    tokenizer_elsewhere: bool = False,
    hint: str | None = None,
    cache: HashCache | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Verify ``path`` (see plugins/verify.py); return a short summary of its weights.

    Raises ModelNotFound for a missing thing and ModelSourceError for a corrupt one, each naming
    the file. ``hint`` replaces the default advice on where the files should come from. Pass the
    agent's ``cache`` (HashCache.for_state_dir) so checksums are not computed again next start.
    """
    return verify_model_dir(
        path, tokenizer_elsewhere=tokenizer_elsewhere, hint=hint, cache=cache, progress=progress
    ).summary


def tokenizer_given(args: Sequence[str]) -> bool:
    """vLLM's --tokenizer points at another directory; then this one needs no tokenizer."""
    return any(arg == "--tokenizer" or arg.startswith("--tokenizer=") for arg in args)


def tree_size(path: Path) -> int:
    """Bytes of every file below ``path``, through symlinks (an HF snapshot links into blobs/)."""
    total = 0
    for file in path.rglob("*"):
        try:
            if file.is_file():
                total += file.stat().st_size
        except OSError:
            continue
    return total


@hookimpl
def agent_model_sources(settings: AgentSettings) -> Sequence[ModelSource]:
    return [LocalModelSource(HashCache.for_state_dir(settings.state_dir))]
