"""Atomic writes keep what an operator set up: a symlinked file stays a link, a 0600 stays 0600."""

from __future__ import annotations

import os
from pathlib import Path

from vllm_agent.fsutil import write_atomic


def test_a_symlinked_file_keeps_its_link_and_the_target_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "repo" / "llama.toml"
    target.parent.mkdir()
    target.write_text('model = "org/m"\n')
    target.chmod(0o600)
    link = tmp_path / "models.d" / "llama.toml"
    link.parent.mkdir()
    link.symlink_to(os.path.relpath(target, link.parent))
    write_atomic(link, 'model = "org/m"\nport = 8001\n')
    assert link.is_symlink()
    assert target.read_text() == 'model = "org/m"\nport = 8001\n'
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in link.parent.iterdir()) == ["llama.toml"]  # no temp file left here


def test_a_new_file_gets_the_mode_asked_for(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a" / "new.conf", "x\n", mode=0o640)
    assert (tmp_path / "a" / "new.conf").stat().st_mode & 0o777 == 0o640


def test_a_dangling_link_is_written_through(tmp_path: Path) -> None:
    link = tmp_path / "link.toml"
    link.symlink_to(tmp_path / "elsewhere" / "real.toml")
    write_atomic(link, "y\n")
    assert link.is_symlink() and (tmp_path / "elsewhere" / "real.toml").read_text() == "y\n"
