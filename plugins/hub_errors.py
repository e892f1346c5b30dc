"""huggingface_hub's failures, as one-line errors an operator can act on."""

from __future__ import annotations

import errno
from pathlib import Path

from vllm_agent.errors import AgentError, ModelNotFound, ModelSourceError, ModelSourceUnavailable

NETWORK_HINT = "check the network or proxy (HTTPS_PROXY, HF_ENDPOINT); an interrupted download resumes where it stopped"


def token_hint(credentials: Path | None) -> str:
    where = credentials / "hf_token" if credentials else "CONFIG_DIR/credentials/hf_token"
    return f"put a token with read access in {where} (the credential hf_token)"


def translate(
    err: BaseException, label: str, *, endpoint: str, cache: Path, credentials: Path | None
) -> AgentError | None:
    """Map huggingface_hub's and the network's errors to ones an operator can act on; None
    for anything unexpected (a bug: it keeps its traceback)."""
    import httpx2
    from huggingface_hub import errors as hf

    repo, _, revision = label.partition("@")
    page = f"{endpoint}/{repo}"
    tokens = token_hint(credentials)
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, hf.GatedRepoError):
        why = "this host has no token" if status == 401 else "the token has not been granted access"
        return ModelSourceError(
            f"{label} is a gated repository and {why} ({status})",
            hint=f"request access at {page}, then {tokens}",
        )
    if isinstance(err, hf.RepositoryNotFoundError):
        return ModelNotFound(
            f"{label}: no repository {repo} on {endpoint} (or it is private and the token cannot see it)",
            hint=f"check the spelling of `model`; for a private repository, {tokens}",
        )
    if isinstance(err, hf.RevisionNotFoundError):
        return ModelNotFound(
            f"{label}: {repo} has no revision {revision!r}",
            hint=f"set `revision` in models.d/NAME.toml to a branch, tag or commit listed at {page}",
        )
    if isinstance(err, hf.HfHubHTTPError):
        if status == 401:
            return ModelSourceError(f"{label}: the Hub refused the token (401)", hint=f"{tokens}; check it is valid")
        if status == 403:
            return ModelSourceError(
                f"{label}: the Hub refused access (403)", hint=f"request access at {page}; {tokens}"
            )
        return ModelSourceUnavailable(
            f"{label}: the Hub at {endpoint} answered {status or 'with an error'}: {first_line(err)}",
            hint="retry later; an interrupted download resumes where it stopped",
        )
    if isinstance(err, (httpx2.TransportError, hf.OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return ModelSourceUnavailable(
            f"{label}: cannot reach the Hub at {endpoint}: {first_line(err)}", hint=NETWORK_HINT
        )
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ModelSourceError(
            f"{label}: no space left in {cache}", hint="free disk space there or set cache_dir in agent.toml"
        )
    if isinstance(err, PermissionError):
        return ModelSourceError(
            f"{label}: cannot write to the model cache {cache}: {err.strerror}",
            hint="the service user must own cache_dir (agent.toml)",
        )
    if isinstance(err, OSError):  # e.g. huggingface_hub's "Consistency check failed" on a short transfer
        return ModelSourceUnavailable(f"{label}: the download failed: {first_line(err)}", hint=NETWORK_HINT)
    if isinstance(err, ValueError):  # HFValidationError and bad arguments
        return ModelSourceError(
            f"{label}: {first_line(err)}", hint="check `model` and `revision` in models.d/NAME.toml"
        )
    return None


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
