"""The daemon's transition history: damaged files are moved aside and rebuilt from what can be
read; a full disk loses nothing this process recorded; compaction never leaves half a file."""

from __future__ import annotations

import json
from pathlib import Path

import structlog
from harness.tmpfs import TinyTmpfs
from vllm_agent.daemon.history import KEEP, History


def line(kind: str, at: float = 1.0) -> bytes:
    return json.dumps({"at": at, "kind": kind, "reason": "why", "restarts": 0}).encode() + b"\n"


def kinds_on_disk(path: Path) -> list[str]:
    return [json.loads(text)["kind"] for text in path.read_text().splitlines()]


def test_damaged_lines_move_the_file_aside_and_the_readable_entries_are_kept(tmp_path: Path) -> None:
    history = History(tmp_path)
    history.directory.mkdir(parents=True)
    content = (
        line("starting")
        + b'{"at": 2, "kind": "re\xffady", "reason": "", "restarts": 0}\n'  # invalid UTF-8
        + b'{"at": "yesterday", "kind": "ready", "reason": "", "restarts": 0}\n'  # wrong type
        + b"[1, 2]\n"  # not an object
        + line("stopped", at=5)
    )
    history.path("a").write_bytes(content)
    with structlog.testing.capture_logs() as logs:
        assert [t.kind for t in history.last("a")] == ["starting", "stopped"]
    (aside,) = history.directory.glob("a.jsonl.corrupt-*")
    assert aside.read_bytes() == content
    (warning,) = [entry for entry in logs if entry["log_level"] == "warning"]
    assert "line 2" in warning["problem"] and "line 3" in warning["problem"] and warning["moved_to"] == str(aside)
    assert kinds_on_disk(history.path("a")) == ["starting", "stopped"]
    history.record("a", "ready", "again", 0)
    assert kinds_on_disk(history.path("a")) == ["starting", "stopped", "ready"]


def test_a_torn_last_line_is_dropped_quietly_and_the_next_record_is_whole(tmp_path: Path) -> None:
    history = History(tmp_path)
    history.directory.mkdir(parents=True)
    history.path("a").write_bytes(line("starting") + b'{"at": 2, "ki')  # a crash mid-append
    with structlog.testing.capture_logs() as logs:
        history.record("a", "ready", "serving", 0)
    assert not logs and not list(history.directory.glob("*.corrupt-*"))
    assert kinds_on_disk(history.path("a")) == ["starting", "ready"]
    assert [t.kind for t in History(tmp_path).last("a")] == ["starting", "ready"]


def test_a_full_disk_keeps_transitions_in_memory_logs_once_and_catches_up(tiny_tmpfs: TinyTmpfs) -> None:
    history = History(tiny_tmpfs.path)
    history.record("a", "starting", "start", 0)
    tiny_tmpfs.fill()
    with structlog.testing.capture_logs() as logs:
        # Longer than the page the file has: an append that needs new space.
        history.record("a", "ready", "serving " + "x" * 5000, 0)
        history.record("a", "restarted", "restart 1", 1)
        assert history.flush() is False
    (warning,) = logs
    assert warning["log_level"] == "warning" and "ENOSPC" in warning["error"]
    assert [t.kind for t in history.last("a")] == ["starting", "ready", "restarted"]
    tiny_tmpfs.free()
    history.record("a", "stopped", "stopped", 1)
    assert kinds_on_disk(history.path("a")) == ["starting", "ready", "restarted", "stopped"]


def test_compaction_on_a_full_disk_leaves_the_old_file_whole(tiny_tmpfs: TinyTmpfs) -> None:
    history = History(tiny_tmpfs.path)
    for number in range(2 * KEEP):
        history.record("a", "restarted", f"restart {number}", number)
    before = history.path("a").read_bytes()
    tiny_tmpfs.fill()
    history.record("a", "failed", "the one that compacts", 2 * KEEP)
    assert history.path("a").read_bytes() == before  # nothing half-written, nothing lost
    tiny_tmpfs.free()
    assert history.flush() is True
    kinds = kinds_on_disk(history.path("a"))
    assert len(kinds) == KEEP and kinds[-1] == "failed"
    reasons = [t.reason for t in History(tiny_tmpfs.path).last("a", 2)]
    assert reasons == [f"restart {2 * KEEP - 1}", "the one that compacts"]
