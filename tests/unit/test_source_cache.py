"""Model source "cache": org/name ids served only from directories on this host (airgapped).

The Hugging Face cache is laid out in tmp exactly as huggingface_hub writes it; the network
test runs the real plugin, loaded through its entry point, in a process with no network at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from harness.ci import missing
from harness.model_files import hf_cache_model, lfs_pointer, model_files, write_dir
from vllm_agent.config.schema import AgentSettings, Deployment
from vllm_agent.errors import ModelNotFound, ModelSourceError
from vllm_agent_plugins.source_cache import CacheModelSource
from vllm_agent_plugins.verify_hashes import HashCache

OLD, NEW = "a" * 40, "b" * 40


def deployment(model: str = "acme/tiny", revision: str | None = None, **extra: object) -> Deployment:
    return Deployment(name="tiny", model=model, source="cache", revision=revision, **extra)


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    return tmp_path / "hub"


@pytest.fixture
def share(tmp_path: Path) -> Path:
    return tmp_path / "share"


@pytest.fixture
def source(hub: Path, share: Path, tmp_path: Path) -> CacheModelSource:
    return CacheModelSource(hub_dirs=[hub], model_dirs=[share], cache=HashCache(tmp_path / "state" / "cache.json"))


async def resolve(source: CacheModelSource, d: Deployment) -> tuple[object, list[str]]:
    lines: list[str] = []
    return await source.resolve(d, lines.append), lines


async def test_a_cached_snapshot_resolves_at_main_and_is_verified(source: CacheModelSource, hub: Path) -> None:
    hf_cache_model(hub, "acme/tiny", model_files(), commit=OLD, refs=())
    snapshot = hf_cache_model(hub, "acme/tiny", model_files(shards=2), commit=NEW, refs=("main",))
    resolved, lines = await resolve(source, deployment())
    assert resolved.path == snapshot
    assert f"acme/tiny (commit {NEW[:12]}) from the Hugging Face cache at {hub}" in resolved.description
    assert "2 weight files" in resolved.description and "6 checksums ok" in resolved.description
    assert lines[0] == "looking up acme/tiny on this host" and lines[-1] == f"acme/tiny ready (commit {NEW[:12]})"


@pytest.mark.parametrize(("revision", "expected"), [(OLD, OLD), ("v1.0", OLD), ("refs/pr/3", NEW)])
async def test_a_revision_is_a_commit_or_a_ref_in_the_cache(
    source: CacheModelSource, hub: Path, revision: str, expected: str
) -> None:
    hf_cache_model(hub, "acme/tiny", model_files(), commit=OLD, refs=("main", "v1.0"))
    hf_cache_model(hub, "acme/tiny", model_files(), commit=NEW, refs=("refs/pr/3",))
    resolved, _ = await resolve(source, deployment(revision=revision))
    assert resolved.path.name == expected


async def test_model_dirs_serve_org_slash_name_then_name(source: CacheModelSource, share: Path) -> None:
    nested = write_dir(share / "acme" / "tiny", model_files())
    flat = write_dir(share / "other", model_files())
    assert (await resolve(source, deployment()))[0].path == nested
    resolved, _ = await resolve(source, deployment("acme/other"))
    assert resolved.path == flat and f"from model directory {share}" in resolved.description


async def test_the_hugging_face_cache_comes_before_model_dirs(source: CacheModelSource, hub: Path, share: Path) -> None:
    write_dir(share / "acme" / "tiny", model_files())
    snapshot = hf_cache_model(hub, "acme/tiny", model_files())
    assert (await resolve(source, deployment()))[0].path == snapshot


async def test_a_missing_model_lists_every_place_looked_and_how_to_bring_it(
    source: CacheModelSource, hub: Path, share: Path
) -> None:
    with pytest.raises(ModelNotFound) as caught:
        await resolve(source, deployment())
    message = caught.value.message
    assert message.startswith("acme/tiny is not on this host: looked in ")
    for place in (hub / "models--acme--tiny", share / "acme" / "tiny", share / "tiny"):
        assert str(place) in message
    assert "huggingface-cli download acme/tiny" in caught.value.hint and "model_dirs" in caught.value.hint


async def test_a_revision_is_never_served_from_a_plain_directory(source: CacheModelSource, share: Path) -> None:
    write_dir(share / "acme" / "tiny", model_files())
    with pytest.raises(ModelNotFound, match="a revision is only looked up in the Hugging Face cache"):
        await resolve(source, deployment(revision="v2"))


async def test_an_incomplete_copy_says_which_file_and_where_it_came_from(source: CacheModelSource, hub: Path) -> None:
    files = model_files()
    files["model.safetensors"] = lfs_pointer(files["model.safetensors"])
    hf_cache_model(hub, "acme/tiny", files)
    with pytest.raises(ModelSourceError) as caught:
        await resolve(source, deployment())
    assert caught.value.message.startswith("model.safetensors is a Git LFS pointer")


async def test_a_path_or_a_climbing_revision_is_refused(source: CacheModelSource) -> None:
    with pytest.raises(ModelSourceError, match="source 'cache' takes a Hugging Face id"):
        await resolve(source, deployment("/srv/models/tiny"))
    with pytest.raises(ModelSourceError, match="is not a branch, tag or commit"):
        await resolve(source, deployment(revision="../../../etc"))


def test_settings_add_model_dirs_and_huggingface_hubs_own_cache_rules(tmp_path: Path) -> None:
    settings = AgentSettings(model_dirs=[tmp_path / "nfs"], state_dir=tmp_path / "state")
    source = CacheModelSource.from_settings(settings, {"HF_HOME": str(tmp_path / "hf")})
    assert source.hub_dirs == [tmp_path / "hf" / "hub"] and source.model_dirs == [tmp_path / "nfs"]
    assert source.cache.file == tmp_path / "state" / "verify-cache.json"
    explicit = CacheModelSource.from_settings(settings, {"HF_HUB_CACHE": str(tmp_path / "c"), "HF_HOME": "/x"})
    assert explicit.hub_dirs == [tmp_path / "c"]


# No network -------------------------------------------------------------------------------------

AIRGAPPED = textwrap.dedent(
    """
    import asyncio, json, sys
    events = []
    def audit(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto"):
            events.append([event, repr(args)[:200]])
    sys.addaudithook(audit)
    from vllm_agent.config.schema import AgentSettings, Deployment
    from vllm_agent.pluginhost.manager import make_plugin_manager
    settings = AgentSettings(**json.loads(sys.argv[1]))
    source = make_plugin_manager(settings).model_source("cache")
    deployment = Deployment(name="tiny", model="acme/tiny", source="cache")
    resolved = asyncio.run(source.resolve(deployment, lambda text: None))
    print(json.dumps({"path": str(resolved.path), "events": events}))
    """
)


def test_resolution_succeeds_with_no_network_and_never_connects(tmp_path: Path) -> None:
    """The real plugin, loaded through its entry point, in a network namespace with no interface
    up (not even loopback); an audit hook records every connect or name lookup it attempts."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        missing("a private network namespace needs root and unshare(1)")
    hub = tmp_path / "hub"
    snapshot = hf_cache_model(hub, "acme/tiny", model_files(shards=2))
    settings = {"state_dir": str(tmp_path / "state"), "model_dirs": [str(tmp_path / "share")]}
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "0", "HTTPS_PROXY": "http://10.255.255.1:9"}
    connect = "import socket; socket.create_connection(('1.1.1.1', 53), 2)"
    probe = subprocess.run(["unshare", "-n", "python3", "-c", connect], capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "Network is unreachable" in probe.stderr  # the namespace really has no network
    argv = ["unshare", "-n", sys.executable, "-c", AIRGAPPED, json.dumps(settings)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"path": str(snapshot), "events": []}
