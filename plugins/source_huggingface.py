"""Model source ``hf``: an ``org/name[@revision]`` from the Hugging Face Hub, kept in the agent's cache.

A start never waits on the Hub for what the cache already holds: a revision that is a commit,
or a branch or tag the cache has a ref for, whose snapshot is complete against the file list
recorded at download, is served from the cache without a network connection (so a start works
with the Hub unreachable). Otherwise the Hub is asked for the revision's file list, only the files
the engine needs are chosen (``hub_files``), free disk is checked against their sizes, and they
are downloaded with byte progress (``hub_transfer``); a download that receives nothing for
``[startup] stall_timeout`` seconds fails with a network reason. ``vllm-agent pull`` asks the Hub
first (``refresh``), so a branch moves on only when an operator pulls.

The token comes from ``HF_TOKEN``, the file ``HF_TOKEN_PATH`` (the unit points it at the
credential hf_token) or ``credentials_dir/hf_token``; it is never in argv or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from vllm_agent import hookimpl
from vllm_agent.config.paths import default_cache_dir
from vllm_agent.errors import ModelNotFound, ModelSourceError, ModelSourceUnavailable
from vllm_agent.plugin_api import AgentSettings, Deployment, ModelSource, Progress, ResolvedModel
from vllm_agent.progress import Transfer, TransferText, duration_text, size_text

from .hub_cache import RemoteFile, RepoCache, free_bytes
from .hub_errors import NETWORK_HINT, token_hint, translate
from .hub_files import select_files
from .hub_transfer import Download
from .source_local import check_model_dir, tokenizer_given
from .verify_hashes import HashCache

TRUE_VALUES = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub accepts for HF_HUB_OFFLINE
DEFAULT_ENDPOINT = "https://huggingface.co"
POLL = 0.25  # seconds between looks at a running download
REPORT_EVERY = 1.0  # seconds between progress reports while bytes arrive


class HuggingFaceSource:
    name = "hf"

    def __init__(self, settings: AgentSettings | None = None, *, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        settings = settings or AgentSettings()
        self.cache_dir = settings.cache_dir or default_cache_dir(os.geteuid() != 0)
        self.credentials_dir = settings.credentials_dir
        # Digests kept across starts: a restart does not hash a 100 GB snapshot again.
        self.hashes = HashCache.for_state_dir(settings.state_dir)
        self.last_transfer: TransferText | None = None  # the last progress a download reported

    @property
    def offline(self) -> bool:
        env = self._environ
        return (env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or "").upper() in TRUE_VALUES

    @property
    def endpoint(self) -> str:
        return (self._environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")

    async def resolve(self, deployment: Deployment, progress: Progress) -> ResolvedModel:
        return await self.fetch(deployment, progress, refresh=False)

    async def fetch(self, deployment: Deployment, progress: Progress, *, refresh: bool) -> ResolvedModel:
        """The snapshot of the deployment's revision, complete in the cache. ``refresh`` asks
        the Hub what the revision is now even when the cache holds it (pull)."""
        repo, revision = deployment.model, deployment.revision or "main"
        label = f"{repo}@{revision}"
        cache = RepoCache(self.cache_dir, repo)
        include = deployment.include_files
        if not refresh or self.offline:
            progress(f"looking up {label} in the cache {self.cache_dir}")
            commit = await asyncio.to_thread(_complete_commit, cache, revision, include, self.offline)
            if commit is not None:
                return await self._ready(deployment, cache, commit, label, progress, "the cache; the Hub was not asked")
            if self.offline:
                raise ModelNotFound(
                    f"{label} is not complete in the cache {self.cache_dir} and HF_HUB_OFFLINE is set",
                    hint=f"run 'vllm-agent pull {repo}' on a connected host and copy the cache, "
                    "or unset HF_HUB_OFFLINE",
                )
        try:
            token = self._token()
            progress(f"asking {self.endpoint} for {label}")
            commit, listing = await asyncio.to_thread(self._listing, repo, revision, token)
            files = [listing[name] for name in select_files(listing, include)]
            await asyncio.to_thread(cache.write_listing, commit, listing.values())
            await self._download(cache, commit, files, label, token, progress, deployment.startup.stall_timeout)
            await asyncio.to_thread(cache.write_ref, revision, commit)
        except Exception as err:
            translated = translate(
                err, label, endpoint=self.endpoint, cache=self.cache_dir, credentials=self.credentials_dir
            )
            if translated is None:
                raise  # not an expected failure: keep the traceback
            raise translated from err
        return await self._ready(deployment, cache, commit, label, progress, self.endpoint)

    async def _ready(
        self, deployment: Deployment, cache: RepoCache, commit: str, label: str, progress: Progress, origin: str
    ) -> ResolvedModel:
        path = cache.snapshot(commit).absolute()
        await asyncio.to_thread(
            check_model_dir,
            path,
            tokenizer_elsewhere=tokenizer_given(deployment.args),
            hint=f"the snapshot of {label} in {self.cache_dir} is incomplete or damaged: "
            f"run 'vllm-agent pull {deployment.model}' to fetch it again",
            cache=self.hashes,
            progress=progress,
        )
        progress(f"{label} ready (commit {commit[:12]}) from {origin}")
        return ResolvedModel(path=path, description=f"{label} (commit {commit[:12]}) from {origin}", revision=commit)

    def _listing(self, repo: str, revision: str, token: str | bool) -> tuple[str, dict[str, RemoteFile]]:
        from huggingface_hub import HfApi

        info = HfApi(endpoint=self.endpoint, token=token, library_name="vllm-agent").model_info(
            repo, revision=revision, files_metadata=True
        )
        listing = {}
        for sibling in info.siblings or []:
            lfs = sibling.lfs
            etag = lfs.sha256 if lfs is not None else sibling.blob_id
            size = sibling.size if sibling.size is not None else (lfs.size if lfs is not None else 0)
            if etag:
                listing[sibling.rfilename] = RemoteFile(sibling.rfilename, size, etag, lfs.sha256 if lfs else None)
        assert info.sha, "the Hub's model info names no commit"
        return info.sha, listing

    async def _download(
        self,
        cache: RepoCache,
        commit: str,
        files: list[RemoteFile],
        label: str,
        token: str | bool,
        progress: Progress,
        stall: float,
    ) -> None:
        download = Download(cache, commit, files, endpoint=self.endpoint, token=token)
        if download.finished.is_set() or download.files_done == len(files):
            return
        await asyncio.to_thread(self._check_space, download, label)
        loop, ended = asyncio.get_running_loop(), asyncio.Event()
        download.start(lambda: loop.call_soon_threadsafe(ended.set))
        last_done, last_change, last_report = -1, time.monotonic(), 0.0
        try:
            while not download.finished.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), POLL)  # the end is seen at once
                now, transfer = time.monotonic(), download.sample()
                if transfer.done != last_done:
                    last_done, last_change = transfer.done, now
                    if now - last_report >= REPORT_EVERY:  # only real progress extends the start
                        last_report = now
                        self.last_transfer = TransferText(transfer, f" ({label})")
                        progress(self.last_transfer)
                elif now - last_change > stall:
                    raise _stalled(label, self.endpoint, now - last_change, transfer, stall)
        finally:
            download.cancel.set()  # a no-op when it finished; else the workers stop between chunks
        if download.error is not None:
            raise download.error
        self.last_transfer = TransferText(download.sample(), f" ({label})")
        progress(self.last_transfer)  # the whole of it, however recent the last report

    def _check_space(self, download: Download, label: str) -> None:
        needed = download.total - download.done
        free, where = free_bytes(self.cache_dir)
        if needed > free:
            raise ModelSourceError(
                f"{label}: not enough disk space: the download needs {size_text(needed)}, "
                f"{size_text(free)} free in {where}",
                hint="free space there, or set cache_dir in agent.toml to a larger disk",
            )

    def _token(self) -> str | bool:
        """The token to send, or False: the agent uses its own credential, never whatever
        ~/.cache/huggingface of the user running it happens to hold."""
        env = self._environ
        if env.get("HF_TOKEN"):
            return env["HF_TOKEN"].strip()
        explicit = env.get("HF_TOKEN_PATH")
        path = Path(explicit) if explicit else (self.credentials_dir / "hf_token" if self.credentials_dir else None)
        if path is None or not path.exists():
            return False
        try:
            return path.read_text(encoding="utf-8").strip() or False
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            raise ModelSourceError(
                f"cannot read the Hugging Face token file {path}: {reason}",
                hint=f"{token_hint(self.credentials_dir)}, readable by the user running vllm-agent",
            ) from None


def _stalled(label: str, endpoint: str, silent: float, transfer: Transfer, stall: float) -> ModelSourceError:
    return ModelSourceUnavailable(
        f"{label}: the download stalled: nothing received from {endpoint} for {duration_text(silent)} "
        f"({size_text(transfer.done)} of {size_text(transfer.total)})",
        hint=f"{NETWORK_HINT}; [startup] stall_timeout ({stall:g}s) sets how long to wait",
    )


def _complete_commit(cache: RepoCache, revision: str, include: Sequence[str], offline: bool) -> str | None:
    """The commit of ``revision`` when the cache holds every file the engine needs of it."""
    commit = cache.local_commit(revision)
    if commit is None or not cache.snapshot(commit).is_dir():
        return None
    listing = cache.listing(commit)
    if listing is None:
        # No file list to judge the snapshot by (a cache copied from an old tool): online, ask
        # the Hub; airgapped, only the model-directory checks can judge it.
        return commit if offline else None
    wanted = [listing[name] for name in select_files(listing, include)]
    return commit if wanted and not cache.missing(commit, wanted) else None


@hookimpl
def agent_model_sources(settings: AgentSettings) -> Sequence[ModelSource]:
    return [HuggingFaceSource(settings)]
