"""Model source ``cache``: ``org/name`` ids served only from directories on this host (airgapped).

Where it looks, in order:

1. The Hugging Face cache layout (``models--ORG--NAME/snapshots/COMMIT``, the revision, default
   ``main``, read from ``refs/`` or given as a commit): agent.toml's ``cache_dir`` (and its
   ``hub/``), then huggingface_hub's own rules (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub).
2. Each ``model_dirs`` entry, as ``DIR/ORG/NAME`` then ``DIR/NAME`` (an NFS model share). A plain
   directory has no revision, so a deployment that sets ``revision`` is only served from (1).

Nothing here can open a connection: no huggingface_hub import, no HTTP client. The engine is
kept offline too (HF_HUB_OFFLINE=1, agent/render/engine_command.py). The directory found is verified like a
``local`` one before the engine starts.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vllm_agent import hookimpl
from vllm_agent.errors import ModelNotFound, ModelSourceError
from vllm_agent.plugin_api import (
    AgentSettings,
    Deployment,
    LocalModel,
    ModelSource,
    Progress,
    ResolvedModel,
    VerifiedModel,
)

from .source_local import tokenizer_given, tree_size
from .verify import verify_model_dir
from .verify_hashes import HashCache

COMMIT = re.compile(r"[0-9a-f]{40}")
HF_SOURCES = ("cache", "hf")  # sources whose models live in the Hugging Face cache layout


@dataclass(frozen=True)
class Found:
    path: Path
    revision: str | None  # the commit, for the Hugging Face layout
    where: str  # for the operator: "the Hugging Face cache at DIR" or "model directory DIR"


def hf_default_cache(environ: Mapping[str, str]) -> Path:
    """The hub cache the way huggingface_hub finds it, read now, not at its import."""
    explicit = environ.get("HF_HUB_CACHE") or environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = environ.get("HF_HOME") or str(Path(environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(home).expanduser() / "hub"


class CacheModelSource:
    name = "cache"

    def __init__(self, *, hub_dirs: Sequence[Path], model_dirs: Sequence[Path] = (), cache: HashCache | None = None):
        self.hub_dirs = list(dict.fromkeys(hub_dirs))
        self.model_dirs = list(model_dirs)
        self.cache = cache or HashCache(None)

    @classmethod
    def from_settings(cls, settings: AgentSettings, environ: Mapping[str, str] = os.environ) -> CacheModelSource:
        hub_dirs = []
        configured = getattr(settings, "cache_dir", None)  # agent.toml cache_dir, shared with the hf source
        if configured:
            hub_dirs += [Path(configured), Path(configured) / "hub"]
        hub_dirs.append(hf_default_cache(environ))
        return cls(hub_dirs=hub_dirs, model_dirs=settings.model_dirs, cache=HashCache.for_state_dir(settings.state_dir))

    def find(self, model: str, revision: str | None = None) -> Found:
        """Where ``model`` at ``revision`` is on this host; ModelNotFound listing every place looked."""
        if "/" not in model or model.startswith("/"):
            raise ModelSourceError(
                f"source 'cache' takes a Hugging Face id 'org/name', got {model!r}",
                hint="for a directory use source 'local' (an absolute `model` path)",
            )
        if revision is not None and (revision.startswith("/") or ".." in revision.split("/")):
            raise ModelSourceError(f"revision {revision!r} is not a branch, tag or commit", hint="e.g. 'main'")
        org, name = model.split("/", 1)
        looked = []
        for hub in self.hub_dirs:
            storage = hub / f"models--{org}--{name}"
            looked.append(str(storage))
            commit = _commit(storage, revision or "main")
            if commit and (storage / "snapshots" / commit).is_dir():
                return Found(storage / "snapshots" / commit, commit, f"the Hugging Face cache at {hub}")
        for base in self.model_dirs if revision is None else []:
            for path in (base / org / name, base / name):
                looked.append(str(path))
                if path.is_dir():
                    return Found(path, None, f"model directory {base}")
        label = f"{model}@{revision}" if revision else model
        note = " (a revision is only looked up in the Hugging Face cache)" if revision and self.model_dirs else ""
        raise ModelNotFound(
            f"{label} is not on this host: looked in {', '.join(looked)}{note}",
            hint=f"on a connected host run `huggingface-cli download {model}` and copy its cache into "
            f"{self.hub_dirs[0]}, or put the model directory under a `model_dirs` entry of agent.toml",
        )

    async def resolve(self, deployment: Deployment, progress: Progress) -> ResolvedModel:
        label = f"{deployment.model}@{deployment.revision}" if deployment.revision else deployment.model
        progress(f"looking up {label} on this host")
        found = await asyncio.to_thread(self.find, deployment.model, deployment.revision)
        verified = await self._verify(found, deployment, progress, force=False)
        commit = f" (commit {found.revision[:12]})" if found.revision else ""
        progress(f"{label} ready{commit}")
        return ResolvedModel(path=found.path, description=f"{label}{commit} from {found.where} ({verified.summary})")

    async def verify(self, deployment: Deployment, progress: Progress, *, force: bool = False) -> VerifiedModel:
        found = await asyncio.to_thread(self.find, deployment.model, deployment.revision)
        return await self._verify(found, deployment, progress, force=force)

    async def _verify(self, found: Found, deployment: Deployment, progress: Progress, *, force: bool) -> VerifiedModel:
        label = f"{deployment.model}@{deployment.revision}" if deployment.revision else deployment.model
        return await asyncio.to_thread(
            verify_model_dir,
            found.path,
            tokenizer_elsewhere=tokenizer_given(deployment.args),
            hint=f"the copy of {label} in {found.where} is incomplete: copy it again from a connected host",
            cache=self.cache,
            progress=progress,
            force=force,
        )

    def local_models(self, deployments: Sequence[Deployment]) -> list[LocalModel]:
        rows = [*self._hub_models(), *self._dir_models()]
        used: dict[Path, list[str]] = {}
        for deployment in deployments:
            if deployment.source_name in HF_SOURCES:
                try:
                    path = self.find(deployment.model, deployment.revision).path
                except (ModelNotFound, ModelSourceError):
                    continue
                used.setdefault(path, []).append(deployment.name)
        return [
            LocalModel(
                source=self.name,
                id=model_id,
                revision=revision,
                refs=refs,
                path=path,
                size=tree_size(path),
                verified=self.cache.verified(path),
                used_by=tuple(sorted(used.get(path, []))),
            )
            for model_id, revision, refs, path in rows
        ]

    def _hub_models(self) -> list[tuple[str, str | None, tuple[str, ...], Path]]:
        rows = []
        for hub in self.hub_dirs:
            for storage in sorted(hub.glob("models--*--*")):
                model_id = storage.name.removeprefix("models--").replace("--", "/", 1)
                refs: dict[str, list[str]] = {}
                for ref in sorted((storage / "refs").rglob("*")):
                    if ref.is_file():
                        refs.setdefault(_read(ref), []).append(ref.relative_to(storage / "refs").as_posix())
                for snapshot in sorted((storage / "snapshots").glob("*")):
                    if snapshot.is_dir():
                        rows.append((model_id, snapshot.name, tuple(refs.get(snapshot.name, [])), snapshot))
        return rows

    def _dir_models(self) -> list[tuple[str, str | None, tuple[str, ...], Path]]:
        rows = []
        for base in self.model_dirs:
            for config in sorted([*base.glob("*/config.json"), *base.glob("*/*/config.json")]):
                rows.append((config.parent.relative_to(base).as_posix(), None, (), config.parent))
        return rows


def _commit(storage: Path, revision: str) -> str | None:
    if COMMIT.fullmatch(revision):
        return revision
    ref = storage / "refs" / revision
    return _read(ref) if ref.is_file() else None


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


@hookimpl
def agent_model_sources(settings: AgentSettings) -> Sequence[ModelSource]:
    return [CacheModelSource.from_settings(settings)]
