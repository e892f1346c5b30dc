"""`vllm-agent pull` as an operator runs it, against a fake Hub over real HTTP: a summary, a
Ctrl-C that leaves nothing passing as complete, and a second pull that resumes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.fake_hub import FakeHub, FakeRepo, model_files
from harness.processes import wait_for
from vllm_agent.progress import ProgressLine, Transfer, TransferText

REPO = "acme/tiny-llama"
SHARD = "model-00002-of-00002.safetensors"
MB = 1024 * 1024


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    files = model_files(2, 3 * MB, extra={"pytorch_model.bin": b"x" * 100})
    with FakeHub({REPO: FakeRepo(files)}) as fake:
        yield fake


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    (conf / "models.d").mkdir(parents=True)
    (conf / "agent.toml").write_text(f'cache_dir = "{tmp_path / "cache"}"\nstate_dir = "{tmp_path / "state"}"\n')
    return conf


def pull(config_dir: Path, hub: FakeHub, *args: str, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    command = [sys.executable, "-m", "vllm_agent", "--config-dir", str(config_dir), "pull", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_pull_prints_a_summary_and_a_second_pull_downloads_nothing(hub: FakeHub, config_dir: Path) -> None:
    first = pull(config_dir, hub, f"{REPO}@main", "--json")
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    summary = json.loads(out)
    commit = hub.repos[REPO].commit
    assert summary["revision"] == commit and summary["revision_requested"] == "main"
    assert summary["path"].endswith(f"models--acme--tiny-llama/snapshots/{commit}")
    assert summary["files"] == 7 and summary["downloaded"] == summary["bytes"] > 6 * MB
    assert "downloading " in err and "7/7 files" in err  # the progress went to stderr

    (config_dir / "models.d" / "tiny.toml").write_text(f'model = "{REPO}"\n')
    again = pull(config_dir, hub, "tiny", "--json")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert json.loads(out)["downloaded"] == 0 and json.loads(out)["path"] == summary["path"]


def test_ctrl_c_leaves_no_complete_looking_snapshot_and_the_next_pull_resumes(
    hub: FakeHub, config_dir: Path, tmp_path: Path
) -> None:
    hub.hold(SHARD, after=2 * MB + 100)
    running = pull(config_dir, hub, REPO)
    blobs = tmp_path / "cache" / "models--acme--tiny-llama" / "blobs"
    wait_for(
        "two chunks of the shard on disk",
        lambda: any(p.stat().st_size >= 2 * MB for p in blobs.glob("*.incomplete")),
        timeout=120,
    )
    running.send_signal(signal.SIGINT)
    _, err = running.communicate(timeout=30)
    assert running.returncode == 130, err
    assert f"interrupted: run 'vllm-agent pull {REPO}' again to resume" in err
    snapshot = blobs.parent / "snapshots" / hub.repos[REPO].commit
    assert not (snapshot / SHARD).exists()
    assert not (blobs.parent / "refs" / "main").exists()  # main does not point at a partial snapshot

    hub.released.set()
    resumed = pull(config_dir, hub, REPO, "--json")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert hub.transfers(SHARD)[-1].headers.get("range") == f"bytes={2 * MB}-"
    assert json.loads(out)["downloaded"] < json.loads(out)["bytes"]


def test_pull_of_a_deployment_with_a_local_model_says_there_is_nothing_to_pull(
    hub: FakeHub, config_dir: Path, tmp_path: Path
) -> None:
    (config_dir / "models.d" / "local.toml").write_text(f'model = "{tmp_path}"\n')
    done = pull(config_dir, hub, "local")
    _, err = done.communicate(timeout=60)
    assert done.returncode == 1
    assert "local takes its model from the source 'local': nothing to pull" in err


def test_a_terminal_gets_a_bar_a_log_gets_a_line_every_10_s() -> None:
    transfer = Transfer(done=3_200_000_000, total=16_100_000_000, rate=45e6, files_done=2, files_total=7)
    text = TransferText(transfer)
    assert text.startswith("downloading 3.2/16.1 GB at 45 MB/s, ETA 4m47s, 2/7 files")

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Tty()
    ProgressLine(screen)(text)
    assert "[###.............]  20% downloading 3.2/16.1 GB at 45 MB/s, ETA 4m47s" in screen.getvalue()

    log = io.StringIO()
    progress = ProgressLine(log)
    for done in range(1, 50):  # a second's worth of changing figures, 9.5 MB/s becoming 10 MB/s
        progress(TransferText(Transfer(done * 1_000_000, 50_000_000, 9.5e6 + done * 1e5, 0, 7)))
    assert len(log.getvalue().splitlines()) == 1
