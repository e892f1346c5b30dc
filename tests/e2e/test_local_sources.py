"""Deployments from this host's disk, end to end: the `cache` source (Hugging Face cache layout and
model_dirs) and the `local` source, in real units under a real user manager, with the fake
engine. What the engine got is read from its own /proc: the absolute model path on its command
line and HF_HUB_OFFLINE=1 in its environment."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from harness.agent_cli import AgentCli
from harness.model_files import hf_cache_model, lfs_pointer, model_files, write_dir

COMMIT = "e" * 40


def engine_seen(started_file: Path) -> tuple[list[str], dict[str, str]]:
    """The running engine's argv and environment, from /proc (we are root)."""
    pid = int(started_file.read_text().split()[-1])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    raw = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").decode().split("\0")
    return argv, dict(item.split("=", 1) for item in raw if "=" in item)


def model_arg(argv: list[str]) -> str:
    return argv[argv.index("--model") + 1]


def deployment(model: str, started: Path, *extra: str) -> str:
    args = json.dumps(["--fake-load-time", "0.3", "--fake-started-file", str(started)])
    return "\n".join([f'model = "{model}"', *extra, f"args = {args}", "tests = []", ""])


def test_a_cache_deployment_serves_the_cached_snapshot_offline(agent: AgentCli, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    snapshot = hf_cache_model(hub, "acme/tiny", model_files(shards=2), commit=COMMIT, refs=("main", "v1"))
    started = tmp_path / "started"
    agent.write_deployment(
        "cached",
        deployment("acme/tiny", started, 'source = "cache"', 'revision = "v1"', f'env = {{ HF_HUB_CACHE = "{hub}" }}'),
    )
    agent.ok("start", "cached", timeout=180)
    assert agent.status("cached")["state"] == "ready"
    argv, env = engine_seen(started)
    assert model_arg(argv) == str(snapshot) and "--revision" not in argv
    assert env["HF_HUB_OFFLINE"] == "1"
    # The unit's verification is on record: `models` (same cache, same state dir) says verified.
    cli = dataclasses.replace(agent, env={**agent.env, "HF_HUB_CACHE": str(hub)})
    listed = json.loads(cli.ok("models", "--json").stdout)["models"]
    row = next(row for row in listed if row["path"] == str(snapshot))
    assert (row["id"], row["refs"], row["used_by"], row["verified"]) == ("acme/tiny", ["main", "v1"], ["cached"], True)


def test_a_cache_deployment_serves_from_model_dirs(agent: AgentCli, tmp_path: Path) -> None:
    share = tmp_path / "share"
    model = write_dir(share / "acme" / "shared", model_files())
    toml = agent.config_dir / "agent.toml"
    toml.write_text(f'model_dirs = ["{share}"]\n' + toml.read_text())  # top-level key: before any table
    started = tmp_path / "started"
    agent.write_deployment("shared", deployment("acme/shared", started, 'source = "cache"'))
    agent.ok("start", "shared", timeout=180)
    argv, env = engine_seen(started)
    assert model_arg(argv) == str(model) and env["HF_HUB_OFFLINE"] == "1"


def test_a_local_deployment_gets_the_absolute_path_and_stays_offline(
    agent: AgentCli, model_dir: Path, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    agent.write_deployment("loc", deployment(str(model_dir), started))
    agent.ok("start", "loc", timeout=180)
    argv, env = engine_seen(started)
    assert model_arg(argv) == str(model_dir) and env["HF_HUB_OFFLINE"] == "1"


def test_a_git_lfs_pointer_fails_the_start_with_its_name_and_no_restarts(agent: AgentCli, tmp_path: Path) -> None:
    files = model_files(shards=2)
    files["model-00002-of-00002.safetensors"] = lfs_pointer(files["model-00002-of-00002.safetensors"])
    hub = tmp_path / "hub"
    hf_cache_model(hub, "acme/pointer", files)
    started = tmp_path / "started"
    agent.write_deployment(
        "pointer", deployment("acme/pointer", started, 'source = "cache"', f'env = {{ HF_HUB_CACHE = "{hub}" }}')
    )
    done = agent.run("start", "pointer", timeout=180)
    assert done.returncode == 1
    assert "model-00002-of-00002.safetensors is a Git LFS pointer" in done.stderr
    status = agent.status("pointer")
    assert status["state"] == "failed" and status["restarts"] == 0
    assert "Git LFS pointer" in status["reason"]
    assert not started.exists()  # no engine was ever spawned
