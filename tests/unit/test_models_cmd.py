"""`vllm-agent models` and `vllm-agent verify` as an operator runs them (no systemd needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness.model_files import hf_cache_model, model_files, sha256sums, write_dir

AGENT = [sys.executable, "-m", "vllm_agent"]
COMMIT = "c" * 40


class Host:
    """A config directory, a Hugging Face cache, an NFS-like share and a local model directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf, self.hub, self.share, self.state = root / "conf", root / "hub", root / "share", root / "state"
        (self.conf / "models.d").mkdir(parents=True)
        (self.conf / "agent.toml").write_text(f'state_dir = "{self.state}"\nmodel_dirs = ["{self.share}"]\n')
        self.snapshot = hf_cache_model(self.hub, "acme/tiny", model_files(shards=2), commit=COMMIT)
        self.shared = write_dir(self.share / "acme" / "big", model_files(shards=3))
        self.local = write_dir(root / "srv" / "llama", model_files())
        sha256sums(self.local)
        self.deploy("a", 'model = "acme/tiny"\nsource = "cache"')
        self.deploy("b", 'model = "acme/tiny"')  # hf: the same snapshot in the same cache
        self.deploy("c", f'model = "{self.local}"')

    def deploy(self, name: str, text: str) -> None:
        (self.conf / "models.d" / f"{name}.toml").write_text(text + "\n")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HF_HUB_CACHE": str(self.hub), "HF_HUB_OFFLINE": "1"}
        return subprocess.run(
            [*AGENT, "--config-dir", str(self.conf), *args], capture_output=True, text=True, timeout=60, env=env
        )

    def models(self) -> dict[str, dict]:
        done = self.run("models", "--json")
        assert done.returncode == 0, done.stderr
        # Only this test's directories: the scope's default caches may hold other models.
        rows = json.loads(done.stdout)["models"]
        return {row["path"]: row for row in rows if Path(row["path"]).is_relative_to(self.root)}


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_models_lists_each_sources_local_models_with_their_users(host: Host) -> None:
    rows = host.models()
    assert set(rows) == {str(host.snapshot), str(host.shared), str(host.local)}
    cached = rows[str(host.snapshot)]
    assert (cached["source"], cached["id"], cached["revision"]) == ("cache", "acme/tiny", COMMIT)
    assert cached["refs"] == ["main"]
    assert cached["used_by"] == ["a", "b"] and cached["verified"] is False
    assert cached["size"] == sum(f.stat().st_size for f in host.snapshot.iterdir())
    shared = rows[str(host.shared)]
    assert (shared["id"], shared["revision"], shared["used_by"]) == ("acme/big", None, [])
    local = rows[str(host.local)]
    assert (local["source"], local["id"], local["used_by"]) == ("local", str(host.local), ["c"])


def test_models_shows_verified_after_a_verify_and_not_after_a_change(host: Host) -> None:
    assert host.run("verify", "a").returncode == 0
    assert host.models()[str(host.snapshot)]["verified"] is True
    assert host.models()[str(host.local)]["verified"] is False
    os.utime(os.path.realpath(host.snapshot / "config.json"))  # touched since: no longer vouched for
    assert host.models()[str(host.snapshot)]["verified"] is False


def test_models_prints_a_table_with_revision_size_and_users(host: Host) -> None:
    done = host.run("models")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["SOURCE", "MODEL", "REVISION", "SIZE", "VERIFIED", "USED", "BY", "PATH"]
    row = next(line for line in lines if str(host.snapshot) in line)
    assert row.split()[:4] == ["cache", "acme/tiny", "main", f"({COMMIT[:12]})"]
    assert row.split()[-3:] == ["no", "a,b", str(host.snapshot)]


def test_verify_checks_a_deployment_and_the_second_run_is_answered_from_the_cache(host: Host) -> None:
    first = host.run("verify", "c", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["ok"] and report["path"] == str(host.local) and report["source"] == "local"
    assert (report["checksums"], report["hashed"], report["cached"]) == (4, 4, 0)
    assert "verifying checksums" in first.stderr
    again = json.loads(host.run("verify", "c", "--json").stdout)
    assert (again["hashed"], again["cached"]) == (0, 4)
    forced = json.loads(host.run("verify", "c", "--json", "--force").stdout)
    assert (forced["hashed"], forced["cached"]) == (4, 0)


def test_verify_of_an_hf_deployment_checks_its_cached_snapshot(host: Host) -> None:
    done = host.run("verify", "b")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ok: b: {host.snapshot} (2 weight files") and "6 checksums ok" in done.stdout


def test_verify_fails_with_the_file_named_and_a_non_zero_status(host: Host) -> None:
    shard = host.local / "model.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    done = host.run("verify", "c")
    assert done.returncode == 1
    assert "error[model.source_failed]: model.safetensors: sha256 mismatch: expected " in done.stderr
    report = json.loads(host.run("verify", "c", "--json").stdout)
    assert report["ok"] is False and report["error"]["code"] == "model.source_failed"
    assert report["error"]["message"].startswith("model.safetensors: sha256 mismatch")


def test_verify_of_a_model_not_on_this_host_says_where_it_looked(host: Host) -> None:
    host.deploy("d", 'model = "acme/absent"\nsource = "cache"')
    done = host.run("verify", "d")
    assert done.returncode == 1 and "error[model.not_found]: acme/absent is not on this host" in done.stderr
    assert host.run("verify", "nope").returncode != 0
