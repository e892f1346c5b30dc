"""Model source ``hf``: an ``org/name`` id resolved through the Hugging Face cache or Hub.

Airgapped when ``HF_HUB_OFFLINE`` is set: then only the local cache is read. Online, the snapshot
is downloaded (or refreshed) into the cache. Either way the snapshot is checked like a local
directory, so a half-copied cache fails here, with the file named, not inside vLLM.

The token is never handled here: huggingface_hub reads it from ``HF_TOKEN_PATH``, which the unit
points at ``$CREDENTIALS_DIRECTORY/hf_token`` (LoadCredential=), so it is never in argv or logs.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vllm_agent import hookimpl
from vllm_agent.errors import AgentError, ModelNotFound, ModelSourceError
from vllm_agent.plugin_api import AgentSettings, Deployment, ModelSource, Progress, ResolvedModel

from .source_local import check_model_dir, tokenizer_given

TRUE_VALUES = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub accepts for HF_HUB_OFFLINE
TOKEN_HINT = "provide a token via the credential hf_token (LoadCredential)"
# Formats vLLM never loads; skipping them avoids downloading e.g. a second full copy in original/.
IGNORE_PATTERNS = [
    "original/*",
    "*.pth",
    "*.pt",
    "*.msgpack",
    "*.h5",
    "*.onnx",
    "onnx/*",
    "*.ot",
    "coreml/*",
    "openvino/*",
]

SnapshotDownload = Callable[..., str]


class HuggingFaceSource:
    """Resolves ``org/name`` ids. ``snapshot_download`` and ``environ`` are injectable for tests."""

    name = "hf"

    def __init__(
        self,
        *,
        snapshot_download: SnapshotDownload | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._snapshot_download = snapshot_download
        self._environ = os.environ if environ is None else environ

    @property
    def offline(self) -> bool:
        env = self._environ
        return (env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or "").upper() in TRUE_VALUES

    @property
    def cache_dir(self) -> Path:
        """The hub cache, found the way huggingface_hub finds it, but read now, not at import."""
        env = self._environ
        explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
        if explicit:
            return Path(explicit).expanduser()
        home = env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
        return Path(home).expanduser() / "hub"

    async def resolve(self, deployment: Deployment, progress: Progress) -> ResolvedModel:
        repo, revision = deployment.model, deployment.revision or "main"
        label = f"{repo}@{revision}"
        offline, cache = self.offline, self.cache_dir
        progress(f"looking up {label} in the Hugging Face cache" if offline else f"downloading {label}")
        try:
            snapshot = await asyncio.to_thread(
                self._download, repo_id=repo, revision=revision, cache_dir=str(cache), local_files_only=offline
            )
        except Exception as err:
            translated = _translate(err, label, cache, offline)
            if translated is None:
                raise  # not an expected failure: keep the traceback
            raise translated from err
        path = Path(snapshot)
        where = f"the Hugging Face cache at {cache}"
        await asyncio.to_thread(
            check_model_dir,
            path,
            tokenizer_elsewhere=tokenizer_given(deployment.args),
            hint=f"the snapshot of {label} in {where} is incomplete: download it again "
            f"(`huggingface-cli download {repo} --revision {revision}`)",
        )
        progress(f"{label} ready ({path.name[:12]})")
        return ResolvedModel(path=path, description=f"{label} (commit {path.name[:12]}) from {where}")

    def _download(self, **kwargs: Any) -> str:
        download = self._snapshot_download
        if download is None:
            from huggingface_hub import snapshot_download as download
        return download(ignore_patterns=IGNORE_PATTERNS, **kwargs)


def _translate(err: Exception, label: str, cache: Path, offline: bool) -> AgentError | None:
    """Map huggingface_hub's errors to ones an operator can act on."""
    from huggingface_hub import errors as hf

    repo = label.split("@", 1)[0]
    page = f"https://huggingface.co/{repo}"
    if isinstance(err, hf.LocalEntryNotFoundError):
        partly = isinstance(err, getattr(hf, "IncompleteSnapshotError", ()))
        state = "only partly in" if partly else "not in"
        if offline:
            return ModelNotFound(
                f"{label} is {state} the Hugging Face cache at {cache}",
                hint=f"download it on a connected host with `huggingface-cli download {repo}` and copy the cache, "
                "or unset HF_HUB_OFFLINE",
            )
        return ModelSourceError(
            f"cannot reach the Hugging Face Hub and {label} is {state} the cache at {cache}",
            hint="check the network or proxy (HTTPS_PROXY, HF_ENDPOINT), or copy the cache from a connected host "
            "and set HF_HUB_OFFLINE=1",
        )
    if isinstance(err, hf.GatedRepoError):
        return ModelSourceError(
            f"{label} is a gated repository and this host has no access to it",
            hint=f"accept the license at {page} and {TOKEN_HINT}",
        )
    if isinstance(err, hf.RepositoryNotFoundError):
        return ModelNotFound(
            f"{label}: no repository {repo} on the Hugging Face Hub (or it is private)",
            hint=f"check the spelling of `model`; if it is private, {TOKEN_HINT}",
        )
    if isinstance(err, hf.RevisionNotFoundError):
        return ModelNotFound(
            f"{label}: {repo} has no revision {label.split('@', 1)[1]!r}",
            hint=f"set `revision` in models.d/NAME.toml to a branch, tag or commit listed at {page}",
        )
    if isinstance(err, hf.HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            return ModelSourceError(
                f"{label}: the Hub refused the token (401)", hint=f"{TOKEN_HINT}, and check that it is valid"
            )
        return ModelSourceError(
            f"{label}: the Hugging Face Hub answered {status or 'with an error'}: {_first_line(err)}",
            hint="retry later; see https://status.huggingface.co",
        )
    if isinstance(err, (getattr(hf, "HTTPError", ConnectionError), ConnectionError, TimeoutError)):
        return ModelSourceError(
            f"{label}: cannot reach the Hugging Face Hub: {_first_line(err)}",
            hint="check the network or proxy (HTTPS_PROXY, HF_ENDPOINT), "
            "or pre-download the model and set HF_HUB_OFFLINE=1",
        )
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ModelSourceError(
            f"{label}: no space left in {cache}", hint="free disk space or point HF_HOME at a larger disk"
        )
    if isinstance(err, PermissionError):
        return ModelSourceError(
            f"{label}: cannot write to the Hugging Face cache at {cache}: {err}",
            hint="the service user must own the cache directory (HF_HOME)",
        )
    if isinstance(err, ValueError):  # HFValidationError and bad arguments
        return ModelSourceError(
            f"{label}: {_first_line(err)}", hint="check `model` and `revision` in models.d/NAME.toml"
        )
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@hookimpl
def agent_model_sources(settings: AgentSettings) -> Sequence[ModelSource]:
    return [HuggingFaceSource()]
