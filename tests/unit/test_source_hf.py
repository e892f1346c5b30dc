"""Model source "hf" against a fake Hub over real HTTP, driven by the real huggingface_hub client:
what is downloaded, progress, resume, cancellation, the cache-first start, disk and errors."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.fake_hub import FakeHub, FakeRepo, Seen, model_files
from harness.tmpfs import TinyTmpfs
from vllm_agent.config.schema import AgentSettings, Deployment, StartupSettings
from vllm_agent.errors import ModelNotFound, ModelSourceError
from vllm_agent_plugins.source_huggingface import HuggingFaceSource

REPO = "acme/tiny-llama"
SHARD = "model-00002-of-00002.safetensors"
MB = 1024 * 1024


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    extra = {
        "pytorch_model.bin": b"pickle" * 100,
        "pytorch_model.bin.index.json": b'{"weight_map": {"a": "pytorch_model.bin"}}',
        "consolidated.pt": b"pt" * 50,
        "original/consolidated.00.pth": b"orig" * 50,
        "onnx/model.onnx": b"onnx" * 50,
        "flax_model.msgpack": b"flax" * 50,
    }
    with FakeHub({REPO: FakeRepo(model_files(2, 3 * MB, extra=extra))}) as fake:
        yield fake


def source(hub: FakeHub | None, cache: Path, **environ: str) -> HuggingFaceSource:
    env = {"HF_ENDPOINT": hub.url} if hub else {}
    return HuggingFaceSource(
        AgentSettings(cache_dir=cache, credentials_dir=cache.parent / "credentials", state_dir=cache.parent / "state"),
        environ=env | environ,
    )


def deployment(revision: str | None = None, **fields: object) -> Deployment:
    return Deployment(name="tiny", model=REPO, revision=revision, **fields)


def fetched(requests: list[Seen]) -> set[str]:
    """The files the Hub sent (GET of /resolve/)."""
    return {
        seen.path.split("/resolve/", 1)[1].split("/", 1)[1]
        for seen in requests
        if "/resolve/" in seen.path and seen.method == "GET"
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# What is downloaded ----------------------------------------------------------------------------


async def test_only_the_engines_files_are_downloaded(hub: FakeHub, tmp_path: Path) -> None:
    resolved = await source(hub, tmp_path / "cache").resolve(deployment(), lambda text: None)
    wanted = {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model-00001-of-00002.safetensors",
        SHARD,
        "model.safetensors.index.json",
    }
    assert {p.name for p in resolved.path.iterdir()} == wanted
    assert fetched(hub.requests) == wanted  # never *.bin beside safetensors, *.pt, original/, onnx/, flax
    repo = hub.repos[REPO]
    assert resolved.revision == repo.commit and resolved.path.name == repo.commit
    assert resolved.path.is_absolute()
    assert sha256(resolved.path / SHARD) == repo.sha256(SHARD)


async def test_pytorch_bin_is_the_fallback_when_a_repo_has_no_safetensors(tmp_path: Path) -> None:
    files = {name: data for name, data in model_files().items() if name != "model.safetensors"}
    files["pytorch_model.bin"] = b"pickle" * 10
    files["consolidated.pth"] = b"pth" * 10
    with FakeHub({REPO: FakeRepo(files)}) as hub:
        resolved = await source(hub, tmp_path / "cache").resolve(deployment(), lambda text: None)
        assert (resolved.path / "pytorch_model.bin").is_file()
        assert "consolidated.pth" not in fetched(hub.requests)


async def test_a_deployment_adds_files_with_include_files(hub: FakeHub, tmp_path: Path) -> None:
    resolved = await source(hub, tmp_path / "cache").resolve(
        deployment(include_files=["original/*"]), lambda text: None
    )
    assert (resolved.path / "original" / "consolidated.00.pth").read_bytes() == b"orig" * 50
    assert "pytorch_model.bin" not in fetched(hub.requests)


def test_include_files_must_stay_inside_the_repository() -> None:
    for bad, reason in (("../x", "'..'"), ("/etc/*", "inside the repository"), (" ", "empty")):
        with pytest.raises(ValueError, match=reason):
            Deployment(name="tiny", model=REPO, include_files=[bad])


# Progress, resume, cancellation ----------------------------------------------------------------


async def test_progress_reports_bytes_rate_and_files_while_bytes_arrive(hub: FakeHub, tmp_path: Path) -> None:
    hub.rate = 2.5 * MB  # 6 MB of shards: a few seconds
    lines: list[str] = []
    await source(hub, tmp_path / "cache").resolve(deployment(), lines.append)
    downloading = [line for line in lines if line.startswith("downloading ")]
    assert len(downloading) >= 2, lines
    assert any(" MB at " in line and "/s, ETA " in line and "/7 files" in line for line in downloading), downloading
    done = [float(line.split()[1].split("/")[0]) for line in downloading]
    assert done == sorted(done) and done[-1] == pytest.approx(6.3, abs=0.1)  # MB, every file counted


async def test_a_dropped_connection_is_resumed_with_a_range_request(hub: FakeHub, tmp_path: Path) -> None:
    hub.cut(SHARD, after=MB + 4096)
    resolved = await source(hub, tmp_path / "cache").resolve(deployment(), lambda text: None)
    ranges = [seen.headers.get("range") for seen in hub.transfers(SHARD)]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=") and ranges[-1] != "bytes=0-"
    assert sha256(resolved.path / SHARD) == hub.repos[REPO].sha256(SHARD)


async def test_a_cancelled_download_leaves_nothing_that_passes_as_complete_and_resumes(
    hub: FakeHub, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    hub.hold(SHARD, after=2 * MB + 100)  # 2 MB of whole chunks reach the disk, then silence
    task = asyncio.create_task(source(hub, cache).resolve(deployment(), lambda text: None))
    assert await asyncio.to_thread(hub.holding.wait, 60)
    partial = next((cache / f"models--{REPO.replace('/', '--')}" / "blobs").glob("*.incomplete"), None)
    deadline = time.monotonic() + 30
    while (partial is None or partial.stat().st_size < 2 * MB) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        partial = next((cache / f"models--{REPO.replace('/', '--')}" / "blobs").glob("*.incomplete"), None)
    task.cancel()  # a unit stop, or Ctrl-C in pull
    with pytest.raises(asyncio.CancelledError):
        await task
    # What reached the disk in whole chunks (2 MB, or less on a machine too loaded to write it
    # all within the wait above) is what the next download must resume from.
    assert partial is not None and partial.stat().st_size > 0
    kept = partial.stat().st_size

    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / hub.repos[REPO].commit
    assert not (snapshot / SHARD).exists()  # the snapshot holds whole files only
    with pytest.raises(ModelNotFound, match="not complete in the cache"):
        await source(hub, cache, HF_HUB_OFFLINE="1").resolve(deployment(), lambda text: None)

    hub.released.set()
    resolved = await source(hub, cache).resolve(deployment(), lambda text: None)
    last = hub.transfers(SHARD)[-1].headers.get("range")
    assert last == f"bytes={kept}-"  # resumed from the partial file, not from zero
    assert sha256(resolved.path / SHARD) == hub.repos[REPO].sha256(SHARD)


async def test_a_download_without_bytes_for_stall_timeout_fails_with_a_network_reason(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.hold(SHARD, after=100)
    quiet = deployment(startup=StartupSettings(stall_timeout=1.5))
    with pytest.raises(ModelSourceError) as caught:
        await source(hub, tmp_path / "cache").resolve(quiet, lambda text: None)
    assert f"the download stalled: nothing received from {hub.url} for" in caught.value.message
    assert "HTTPS_PROXY" in caught.value.hint and "stall_timeout" in caught.value.hint


# The cache first -------------------------------------------------------------------------------


async def test_a_cached_revision_starts_without_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = await source(hub, cache).resolve(deployment(), lambda text: None)
    hub.close()  # unreachable from now on
    asked = len(hub.requests)
    lines: list[str] = []
    again = await source(hub, cache).resolve(deployment(), lines.append)
    by_commit = await source(hub, cache).resolve(deployment(first.revision), lambda text: None)
    assert again.path == first.path == by_commit.path and len(hub.requests) == asked
    assert again.description.endswith("from the cache; the Hub was not asked")
    assert again.revision == first.revision


async def test_pull_asks_the_hub_even_when_the_revision_is_cached(hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    await source(hub, cache).resolve(deployment(), lambda text: None)
    asked = len(hub.requests)
    await source(hub, cache).fetch(deployment(), lambda text: None, refresh=True)
    assert any("/api/models/" in seen.path for seen in hub.requests[asked:])
    assert not fetched(hub.requests[asked:])  # nothing downloaded twice


async def test_a_cache_filled_by_hf_download_is_served_without_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    cache = tmp_path / "cache"
    await asyncio.to_thread(snapshot_download, REPO, cache_dir=cache, endpoint=hub.url, token=False)
    hub.close()
    resolved = await source(hub, cache).resolve(deployment(), lambda text: None)
    assert resolved.revision == hub.repos[REPO].commit
    assert resolved.description.endswith("from the cache; the Hub was not asked")


async def test_an_unreachable_hub_without_the_model_cached_says_so(tmp_path: Path) -> None:
    with FakeHub() as gone:
        url = gone.url
    unreachable = HuggingFaceSource(
        AgentSettings(cache_dir=tmp_path / "cache", state_dir=tmp_path / "state"), environ={"HF_ENDPOINT": url}
    )
    with pytest.raises(ModelSourceError) as caught:
        await unreachable.resolve(deployment(), lambda text: None)
    assert f"{REPO}@main: cannot reach the Hub at {url}" in caught.value.message
    assert "HTTPS_PROXY" in caught.value.hint


# Disk and errors -------------------------------------------------------------------------------


async def test_too_little_disk_is_refused_before_downloading(hub: FakeHub, tiny_tmpfs: TinyTmpfs) -> None:
    with pytest.raises(ModelSourceError) as caught:
        await source(hub, tiny_tmpfs.path / "cache").resolve(deployment(), lambda text: None)
    message = caught.value.message
    assert "not enough disk space: the download needs 6.3 MB" in message and f"free in {tiny_tmpfs.path}" in message
    assert not fetched(hub.requests)


async def test_a_gated_repository_without_a_token_names_the_page_and_the_token_file(tmp_path: Path) -> None:
    with FakeHub({REPO: FakeRepo(model_files(), gated=True, granted={"hf_granted"})}) as hub:
        with pytest.raises(ModelSourceError) as caught:
            await source(hub, tmp_path / "cache").resolve(deployment(), lambda text: None)
        assert caught.value.message == f"{REPO}@main is a gated repository and this host has no token (401)"
        hint = caught.value.hint or ""
        assert f"request access at {hub.url}/{REPO}" in hint
        assert f"{tmp_path / 'credentials' / 'hf_token'} (the credential hf_token)" in hint

        (tmp_path / "credentials").mkdir()
        (tmp_path / "credentials" / "hf_token").write_text("hf_other\n")
        with pytest.raises(ModelSourceError, match=r"the token has not been granted access \(403\)"):
            await source(hub, tmp_path / "cache").resolve(deployment(), lambda text: None)

        (tmp_path / "credentials" / "hf_token").write_text("hf_granted\n")
        await source(hub, tmp_path / "cache").resolve(deployment(), lambda text: None)
        assert hub.transfers("config.json")[-1].headers.get("authorization") == "Bearer hf_granted"


async def test_an_unreadable_token_file_is_named(hub: FakeHub, tmp_path: Path) -> None:
    token = tmp_path / "token-dir"
    token.mkdir()  # even root cannot read a directory as a file
    with pytest.raises(ModelSourceError) as caught:
        await source(hub, tmp_path / "cache", HF_TOKEN_PATH=str(token)).resolve(deployment(), lambda text: None)
    assert caught.value.message == f"cannot read the Hugging Face token file {token}: Is a directory"


async def test_an_unknown_repository_and_an_unknown_revision_are_not_found(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=f"no repository acme/nope on {hub.url}"):
        await source(hub, tmp_path / "cache").resolve(Deployment(name="x", model="acme/nope"), lambda text: None)
    with pytest.raises(ModelNotFound) as caught:
        await source(hub, tmp_path / "cache").resolve(deployment("nightly"), lambda text: None)
    assert caught.value.message == f"{REPO}@nightly: {REPO} has no revision 'nightly'"
    assert f"listed at {hub.url}/{REPO}" in (caught.value.hint or "")


# Airgapped (HF_HUB_OFFLINE) against a cache other tools wrote -----------------------------------


def cache_like_huggingface_hub(cache: Path, commit: str, ref: str = "main") -> Path:
    storage = cache / f"models--{REPO.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / ref).write_text(commit)
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir(exist_ok=True)
    for name, data in model_files().items():
        # huggingface_hub names a blob by its ETag: an LFS file's sha256, a small file's git blob sha1.
        etag = (
            hashlib.sha256(data).hexdigest()
            if name.endswith(".safetensors")
            else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        )
        blob = storage / "blobs" / etag
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("../../blobs") / blob.name)
    return snapshot


async def test_offline_serves_a_cache_copied_from_elsewhere_by_ref_or_commit(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    snapshot = cache_like_huggingface_hub(cache, "a" * 40)
    tagged = cache_like_huggingface_hub(cache, "b" * 40, ref="v2")
    offline = source(None, cache, HF_HUB_OFFLINE="1")
    assert (await offline.resolve(deployment(), lambda text: None)).path == snapshot
    assert (await offline.resolve(deployment("v2"), lambda text: None)).path == tagged
    assert (await offline.resolve(deployment("b" * 40), lambda text: None)).path == tagged
    with pytest.raises(ModelNotFound, match=f"{REPO}@v9 is not complete in the cache"):
        await offline.resolve(deployment("v9"), lambda text: None)


async def test_offline_a_snapshot_without_weights_is_named(tmp_path: Path) -> None:
    snapshot = cache_like_huggingface_hub(tmp_path / "cache", "c" * 40)
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(ModelNotFound, match=f"model directory {snapshot} has no weights"):
        await source(None, tmp_path / "cache", HF_HUB_OFFLINE="1").resolve(deployment(), lambda text: None)
