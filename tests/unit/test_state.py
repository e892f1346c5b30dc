"""The per-deployment state file: damaged files are moved aside and rebuilt; a disk that refuses
writes never loses a change this process made, and is logged once, not on every write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog
from harness.tmpfs import TinyTmpfs
from vllm_agent.deployments.state import StateStore


def warnings(logs: list[dict]) -> list[dict]:
    return [entry for entry in logs if entry["log_level"] == "warning"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"name": "a", "phase": "serv\xff\xfeing"}', id="invalid-utf8"),
        pytest.param(b'["serving"]', id="not-an-object"),
        pytest.param(b'{"name": "a", "phase": 3}', id="wrong-type"),
        pytest.param(b'{"name": "a", "pid": true}', id="bool-for-int"),
        pytest.param(b'{"name": "a", "health": {"ok": true}}', id="object-for-list"),
        pytest.param(b'{"name": "a", "phase": "serving", "re', id="truncated"),
        pytest.param(b"", id="empty"),
    ],
)
def test_a_damaged_state_file_is_moved_aside_and_rebuilt_with_a_warning(tmp_path: Path, content: bytes) -> None:
    store = StateStore(tmp_path)
    store.path("a").parent.mkdir(parents=True)
    store.path("a").write_bytes(content)
    with structlog.testing.capture_logs() as logs:
        state = store.load("a")
    assert (state.name, state.phase, state.pid, state.health) == ("a", "stopped", 0, [])
    (aside,) = store.directory.glob("a.json.corrupt-*")
    assert aside.read_bytes() == content
    (warning,) = warnings(logs)
    assert warning["file"] == str(store.path("a")) and warning["moved_to"] == str(aside)
    assert not store.path("a").exists()
    store.update("a", phase="serving")
    assert json.loads(store.path("a").read_text())["phase"] == "serving"


def test_unknown_fields_of_other_versions_are_not_damage(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.path("a").parent.mkdir(parents=True)
    store.path("a").write_text('{"name": "a", "phase": "serving", "since": 12, "retired_field": [1]}')
    with structlog.testing.capture_logs() as logs:
        state = store.load("a")
    assert (state.phase, state.since) == ("serving", 12.0)
    assert not warnings(logs) and not list(store.directory.glob("*.corrupt-*"))


def on_disk(store: StateStore, name: str) -> dict:
    return json.loads(store.path(name).read_text())


def test_a_full_disk_keeps_changes_in_memory_logs_once_and_catches_up(tiny_tmpfs: TinyTmpfs) -> None:
    store = StateStore(tiny_tmpfs.path)
    store.update("a", phase="serving", pid=10)
    tiny_tmpfs.fill()
    with structlog.testing.capture_logs() as logs:
        store.update("a", phase="unhealthy", reason="check failed")
        store.update("a", health=[{"name": "http", "ok": False}])
        store.update("b", phase="starting")
    (warning,) = warnings(logs)
    assert "ENOSPC" in warning["error"]
    # Every store of this directory in this process sees the changes; the disk has the old file.
    again = StateStore(tiny_tmpfs.path).load("a")
    assert (again.phase, again.reason, again.pid, again.health) == ("unhealthy", "check failed", 10, [warning_row()])
    assert on_disk(store, "a")["phase"] == "serving" and not store.path("b").exists()
    assert store.pending() == ["a", "b"]
    tiny_tmpfs.free()
    with structlog.testing.capture_logs() as logs:
        store.update("a", reason="check failed twice")  # the next write retries everything
    assert (on_disk(store, "a")["phase"], on_disk(store, "a")["reason"]) == ("unhealthy", "check failed twice")
    assert on_disk(store, "a")["health"] == [warning_row()]
    assert on_disk(store, "b")["phase"] == "starting"
    assert store.pending() == [] and [entry["log_level"] for entry in logs] == ["info"]


def warning_row() -> dict:
    return {"name": "http", "ok": False}


def test_flush_writes_what_a_full_disk_refused(tiny_tmpfs: TinyTmpfs) -> None:
    store = StateStore(tiny_tmpfs.path)
    tiny_tmpfs.fill()
    store.update("a", phase="serving")
    assert store.flush() is False and not store.path("a").exists()
    tiny_tmpfs.free()
    assert store.flush() is True
    assert on_disk(store, "a")["phase"] == "serving"


def test_a_read_only_disk_is_logged_once_and_written_once_writable(tiny_tmpfs: TinyTmpfs) -> None:
    store = StateStore(tiny_tmpfs.path)
    store.update("a", phase="serving")
    tiny_tmpfs.remount(read_only=True)
    try:
        with structlog.testing.capture_logs() as logs:
            store.update("a", phase="failed", reason="engine died")
            store.update("a", startup_failures=1)
            assert store.flush() is False
        (warning,) = warnings(logs)
        assert "EROFS" in warning["error"]
        assert store.load("a").reason == "engine died" and on_disk(store, "a")["phase"] == "serving"
    finally:
        tiny_tmpfs.remount(read_only=False)
    assert store.flush() is True
    assert (on_disk(store, "a")["phase"], on_disk(store, "a")["startup_failures"]) == ("failed", 1)


def test_a_damaged_file_on_a_read_only_disk_reads_as_defaults_with_one_warning(tiny_tmpfs: TinyTmpfs) -> None:
    store = StateStore(tiny_tmpfs.path)
    store.path("a").parent.mkdir(parents=True)
    store.path("a").write_text("{")
    tiny_tmpfs.remount(read_only=True)
    try:
        with structlog.testing.capture_logs() as logs:
            assert store.load("a").phase == "stopped"
            assert store.load("a").phase == "stopped"
        (warning,) = warnings(logs)
        assert "EROFS" in warning["error"] and store.path("a").read_text() == "{"
    finally:
        tiny_tmpfs.remount(read_only=False)
