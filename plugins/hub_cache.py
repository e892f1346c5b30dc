"""The Hugging Face cache layout, as huggingface_hub writes it, plus the agent's manifests.

    CACHE/models--ORG--NAME/blobs/ETAG             one file's bytes (ETAG: sha256 for LFS files)
    CACHE/models--ORG--NAME/blobs/ETAG.incomplete  a transfer in progress; resumed from its size
    CACHE/models--ORG--NAME/snapshots/COMMIT/PATH  a symlink to its blob, made once the blob is whole
    CACHE/models--ORG--NAME/refs/REVISION          the commit a branch or tag pointed at
    CACHE/models--ORG--NAME/.vllm-agent/COMMIT.json  the repository's file list at COMMIT

A snapshot directory only ever holds whole files, but it can hold some of them (an interrupted
download). Whether it is complete is decided against the file list the Hub gave for that commit,
which the manifest keeps, so the decision needs no network. Caches filled by other tools
(``hf download``) are read too: huggingface_hub's own tree listing stands in for the manifest.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from vllm_agent.fsutil import symlink_atomic, write_atomic

COMMIT_RE = re.compile(r"[0-9a-f]{40}")
MANIFEST_DIR = ".vllm-agent"


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    etag: str  # the blob's name: the LFS sha256, else the git blob id
    sha256: str | None = None  # known for LFS files


class RepoCache:
    def __init__(self, cache_dir: Path, repo: str) -> None:
        self.cache_dir = cache_dir
        self.repo = repo
        self.storage = cache_dir / f"models--{repo.replace('/', '--')}"
        self.blobs = self.storage / "blobs"

    def snapshot(self, commit: str) -> Path:
        return self.storage / "snapshots" / commit

    def local_commit(self, revision: str) -> str | None:
        """The commit ``revision`` names without asking the Hub: itself when it is a commit
        hash, else what the cache's ref recorded at the last download; None if neither."""
        if COMMIT_RE.fullmatch(revision):
            return revision
        try:
            commit = (self.storage / "refs" / revision).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return commit if COMMIT_RE.fullmatch(commit) else None

    def write_ref(self, revision: str, commit: str) -> None:
        if revision != commit:
            write_atomic(self.storage / "refs" / revision, commit)

    def listing(self, commit: str) -> dict[str, RemoteFile] | None:
        """The repository's files at ``commit`` as last seen on the Hub, or None if unknown."""
        try:
            data = json.loads((self.storage / MANIFEST_DIR / f"{commit}.json").read_text())
            return {item["path"]: RemoteFile(**item) for item in data["files"]}
        except FileNotFoundError:
            return self._hf_tree(commit)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable or damaged: treat as unknown, a download rewrites it

    def write_listing(self, commit: str, files: Iterable[RemoteFile]) -> None:
        body = {"repo": self.repo, "commit": commit, "files": [asdict(item) for item in files]}
        write_atomic(self.storage / MANIFEST_DIR / f"{commit}.json", json.dumps(body, indent=1) + "\n")

    def missing(self, commit: str, files: Iterable[RemoteFile]) -> list[RemoteFile]:
        """The files not whole in the snapshot (absent, or of another size than the Hub said)."""
        snapshot = self.snapshot(commit)
        return [item for item in files if _size(snapshot / item.path) != item.size]

    def blob(self, etag: str) -> Path:
        return self.blobs / etag

    def incomplete(self, etag: str) -> Path:
        return self.blobs / f"{etag}.incomplete"

    def lock_file(self, etag: str) -> Path:
        return self.storage / MANIFEST_DIR / "locks" / f"{etag}.lock"

    def link(self, commit: str, path: str, etag: str) -> None:
        """Make the snapshot's entry point at the blob, relatively, as huggingface_hub does."""
        link = self.snapshot(commit) / path
        link.parent.mkdir(parents=True, exist_ok=True)
        symlink_atomic(link, Path(os.path.relpath(self.blob(etag), link.parent)))

    def _hf_tree(self, commit: str) -> dict[str, RemoteFile] | None:
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError

        try:
            tree = get_cached_repo_tree(self.repo, revision=commit, cache_dir=self.cache_dir)
        except (CachedRepoTreeNotFoundError, OSError, ValueError):
            return None
        return {item.path: RemoteFile(path=item.path, size=item.size, etag=item.blob_id) for item in tree}


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size  # follows the symlink: a dangling one is missing
    except OSError:
        return None


def free_bytes(directory: Path) -> tuple[int, Path]:
    """Free space for an unprivileged writer where ``directory`` is or will be created."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    return stats.f_bavail * stats.f_frsize, probe
