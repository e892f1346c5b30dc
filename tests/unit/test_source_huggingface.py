"""Model source "hf": org/name ids from the Hugging Face cache (airgapped) or the Hub.

Nothing here reaches the network: offline tests read a cache laid out in tmp exactly as
huggingface_hub writes it, and online tests inject a snapshot_download with the real signature
that raises the real huggingface_hub errors.
"""

from __future__ import annotations

import errno
import inspect
import json
import struct
from collections.abc import Callable
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import errors as hf
from vllm_agent.config import Deployment
from vllm_agent.errors import ModelNotFound, ModelSourceError
from vllm_agent_plugins.source_huggingface import HuggingFaceSource

REPO = "acme/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MODEL_FILES = {
    "config.json": json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}).encode(),
    "tokenizer.json": b'{"version": "1.0"}',
    "model.safetensors": struct.pack("<Q", 2) + b"{}",
}


def cache_model(
    hub: Path, repo: str = REPO, *, ref: str = "main", commit: str = COMMIT, files: dict | None = None
) -> Path:
    """Lay out hub/models--org--name as huggingface_hub does: blobs, refs, symlinked snapshots."""
    storage = hub / f"models--{repo.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / ref).write_text(commit)
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (storage / "blobs").mkdir(exist_ok=True)
    for name, data in (MODEL_FILES if files is None else files).items():
        blob = storage / "blobs" / f"blob-{name}"
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("../../blobs") / blob.name)
    return snapshot


def deployment(revision: str | None = None) -> Deployment:
    return Deployment(name="tiny", model=REPO, revision=revision)


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    return tmp_path / "hub"


@pytest.fixture
def offline(hub: Path) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}


def real_signature(body: Callable[..., str]) -> Callable[..., str]:
    """A fake snapshot_download that refuses calls the real one would refuse."""
    signature = inspect.signature(huggingface_hub.snapshot_download)

    def fake(*args: object, **kwargs: object) -> str:
        bound = signature.bind(*args, **kwargs)
        fake.calls.append(bound.arguments)
        return body(**bound.arguments)

    fake.calls = []
    return fake


def raising(error: BaseException) -> Callable[..., str]:
    def body(**arguments: object) -> str:
        raise error

    return real_signature(body)


def hub_response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", f"https://huggingface.co/api/models/{REPO}"))


# Airgapped -------------------------------------------------------------------------------------


async def test_offline_resolves_a_cached_model_from_the_cache(hub: Path, offline: dict[str, str]) -> None:
    snapshot = cache_model(hub)
    lines: list[str] = []
    resolved = await HuggingFaceSource(environ=offline).resolve(deployment(), lines.append)
    assert resolved.path == snapshot
    assert resolved.description == f"{REPO}@main (commit {COMMIT[:12]}) from the Hugging Face cache at {hub}"
    assert lines[0] == f"looking up {REPO}@main in the Hugging Face cache"
    assert lines[-1] == f"{REPO}@main ready ({COMMIT[:12]})"


async def test_offline_follows_the_deployments_revision(hub: Path, offline: dict[str, str]) -> None:
    cache_model(hub)
    tagged = cache_model(hub, ref="v2", commit="f" * 40)
    resolved = await HuggingFaceSource(environ=offline).resolve(deployment("v2"), lambda line: None)
    assert resolved.path == tagged
    pinned = await HuggingFaceSource(environ=offline).resolve(deployment(COMMIT), lambda line: None)
    assert pinned.path.name == COMMIT


async def test_offline_model_not_in_the_cache_says_how_to_bring_it(hub: Path, offline: dict[str, str]) -> None:
    with pytest.raises(ModelNotFound) as caught:
        await HuggingFaceSource(environ=offline).resolve(deployment(), lambda line: None)
    assert caught.value.message == f"{REPO}@main is not in the Hugging Face cache at {hub}"
    assert f"`huggingface-cli download {REPO}`" in caught.value.hint
    assert "copy the cache" in caught.value.hint and "unset HF_HUB_OFFLINE" in caught.value.hint


async def test_offline_revision_not_in_the_cache_is_named(hub: Path, offline: dict[str, str]) -> None:
    cache_model(hub)
    with pytest.raises(ModelNotFound, match=f"{REPO}@v9 is not in the Hugging Face cache"):
        await HuggingFaceSource(environ=offline).resolve(deployment("v9"), lambda line: None)


async def test_a_partly_copied_snapshot_names_the_missing_weights(hub: Path, offline: dict[str, str]) -> None:
    snapshot = cache_model(hub, files={"config.json": MODEL_FILES["config.json"]})
    with pytest.raises(ModelNotFound) as caught:
        await HuggingFaceSource(environ=offline).resolve(deployment(), lambda line: None)
    assert f"model directory {snapshot} has no weights" in caught.value.message
    assert f"the snapshot of {REPO}@main in the Hugging Face cache at {hub} is incomplete" in caught.value.hint
    assert f"huggingface-cli download {REPO} --revision main" in caught.value.hint


def test_the_cache_is_found_like_huggingface_hub_finds_it(tmp_path: Path) -> None:
    assert HuggingFaceSource(environ={"HF_HOME": "/srv/hf"}).cache_dir == Path("/srv/hf/hub")
    assert HuggingFaceSource(environ={"HF_HOME": "/srv/hf", "HF_HUB_CACHE": "/data/hub"}).cache_dir == Path("/data/hub")
    assert HuggingFaceSource(environ={"XDG_CACHE_HOME": "/c"}).cache_dir == Path("/c/huggingface/hub")
    assert HuggingFaceSource(environ={"HF_HUB_OFFLINE": "true"}).offline
    assert not HuggingFaceSource(environ={"HF_HUB_OFFLINE": "0"}).offline


# Online (injected hub) -------------------------------------------------------------------------


async def test_online_downloads_into_the_cache_and_reports_progress(hub: Path) -> None:
    download = real_signature(lambda **arguments: str(cache_model(Path(arguments["cache_dir"]))))
    lines: list[str] = []
    source = HuggingFaceSource(snapshot_download=download, environ={"HF_HUB_CACHE": str(hub)})
    resolved = await source.resolve(deployment(), lines.append)
    assert resolved.path == hub / f"models--acme--tiny-llama/snapshots/{COMMIT}"
    assert lines == [f"downloading {REPO}@main", f"{REPO}@main ready ({COMMIT[:12]})"]
    (call,) = download.calls
    assert call["repo_id"] == REPO and call["revision"] == "main" and call["cache_dir"] == str(hub)
    assert call["local_files_only"] is False
    assert "original/*" in call["ignore_patterns"]
    assert "token" not in call  # huggingface_hub reads HF_TOKEN_PATH itself; the token never passes here


async def test_a_gated_model_says_to_accept_the_license_and_provide_a_token(hub: Path) -> None:
    error = hf.GatedRepoError("403 Client Error. Cannot access gated repo", response=hub_response(403))
    source = HuggingFaceSource(snapshot_download=raising(error), environ={"HF_HUB_CACHE": str(hub)})
    with pytest.raises(ModelSourceError) as caught:
        await source.resolve(deployment(), lambda line: None)
    assert f"{REPO}@main is a gated repository" in caught.value.message
    assert f"accept the license at https://huggingface.co/{REPO}" in caught.value.hint
    assert "credential hf_token (LoadCredential)" in caught.value.hint


async def test_an_unknown_repository_is_not_found(hub: Path) -> None:
    error = hf.RepositoryNotFoundError("404 Client Error. Repository Not Found", response=hub_response(404))
    source = HuggingFaceSource(snapshot_download=raising(error), environ={"HF_HUB_CACHE": str(hub)})
    with pytest.raises(ModelNotFound) as caught:
        await source.resolve(deployment(), lambda line: None)
    assert f"no repository {REPO} on the Hugging Face Hub" in caught.value.message
    assert "spelling of `model`" in caught.value.hint and "hf_token" in caught.value.hint


async def test_an_unknown_revision_names_the_revision(hub: Path) -> None:
    error = hf.RevisionNotFoundError("404 Client Error. Revision Not Found", response=hub_response(404))
    source = HuggingFaceSource(snapshot_download=raising(error), environ={"HF_HUB_CACHE": str(hub)})
    with pytest.raises(ModelNotFound) as caught:
        await source.resolve(deployment("nightly"), lambda line: None)
    assert f"{REPO} has no revision 'nightly'" in caught.value.message
    assert "`revision` in models.d/NAME.toml" in caught.value.hint


async def test_an_unreachable_hub_without_a_cached_copy_suggests_offline_mode(hub: Path) -> None:
    error = hf.LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub")
    source = HuggingFaceSource(snapshot_download=raising(error), environ={"HF_HUB_CACHE": str(hub)})
    with pytest.raises(ModelSourceError) as caught:
        await source.resolve(deployment(), lambda line: None)
    assert f"cannot reach the Hugging Face Hub and {REPO}@main is not in the cache at {hub}" in caught.value.message
    assert "HF_HUB_OFFLINE=1" in caught.value.hint


async def test_a_network_error_is_reported_with_the_proxy_settings_to_check(hub: Path) -> None:
    error = httpx2.ConnectError("[Errno 111] Connection refused")
    source = HuggingFaceSource(snapshot_download=raising(error), environ={"HF_HUB_CACHE": str(hub)})
    with pytest.raises(ModelSourceError) as caught:
        await source.resolve(deployment(), lambda line: None)
    assert "cannot reach the Hugging Face Hub: [Errno 111] Connection refused" in caught.value.message
    assert "HTTPS_PROXY" in caught.value.hint


async def test_a_rejected_token_points_at_the_credential(hub: Path) -> None:
    error = hf.HfHubHTTPError("401 Client Error: Unauthorized", response=hub_response(401))
    source = HuggingFaceSource(snapshot_download=raising(error), environ={"HF_HUB_CACHE": str(hub)})
    with pytest.raises(ModelSourceError) as caught:
        await source.resolve(deployment(), lambda line: None)
    assert "refused the token (401)" in caught.value.message
    assert "credential hf_token" in caught.value.hint


async def test_a_hub_outage_names_the_status(hub: Path) -> None:
    error = hf.HfHubHTTPError("503 Server Error: Service Unavailable", response=hub_response(503))
    source = HuggingFaceSource(snapshot_download=raising(error), environ={"HF_HUB_CACHE": str(hub)})
    with pytest.raises(ModelSourceError, match="answered 503: 503 Server Error"):
        await source.resolve(deployment(), lambda line: None)


async def test_a_full_disk_names_the_cache(hub: Path) -> None:
    error = OSError(errno.ENOSPC, "No space left on device")
    source = HuggingFaceSource(snapshot_download=raising(error), environ={"HF_HUB_CACHE": str(hub)})
    with pytest.raises(ModelSourceError) as caught:
        await source.resolve(deployment(), lambda line: None)
    assert f"no space left in {hub}" in caught.value.message and "HF_HOME" in caught.value.hint


async def test_an_unexpected_error_keeps_its_traceback(hub: Path) -> None:
    source = HuggingFaceSource(snapshot_download=raising(RuntimeError("bug")), environ={"HF_HUB_CACHE": str(hub)})
    with pytest.raises(RuntimeError, match="bug"):
        await source.resolve(deployment(), lambda line: None)
