"""Checksums of model files: what each file should hash to, what it does, and a cache of both.

Expected digests come from a ``SHA256SUMS`` file in the model directory (``sha256sum`` output)
and from the Hugging Face cache layout itself: a snapshot file is a symlink to
``blobs/<name>``, where the name of an LFS file (the weights) IS its sha256 and the name of a
small git file is its git blob sha1. Files are hashed in parallel threads (hashlib releases the
GIL), and results are cached by (real path, size, mtime_ns) in a JSON file under the agent's
state directory, so a restart does not re-read 100 GB.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vllm_agent.config.paths import default_state_dir
from vllm_agent.errors import ModelNotFound, ModelSourceError
from vllm_agent.fsutil import write_atomic
from vllm_agent.log import get_logger
from vllm_agent.sizes import human_size

SUMS_FILE = "SHA256SUMS"
CACHE_FILE = "verify-cache.json"
CHUNK = 1 << 20  # large reads: hashing, not syscalls, should be the cost
PROGRESS_EVERY = 2.0  # seconds between progress lines while hashing
SHA256, GIT_SHA1 = "sha256", "git-sha1"
# A small file's blob is named by its ETag: the Hub sends the git blob sha1, some mirrors the
# plain sha1 of the content. Either passes; anything else is a damaged file.
DIGESTS = {SHA256: ("sha256",), GIT_SHA1: ("git-sha1", "sha1")}
_DIGEST = {SHA256: re.compile(r"[0-9a-f]{64}"), GIT_SHA1: re.compile(r"[0-9a-f]{40}")}
_SUMS_LINE = re.compile(r"([0-9A-Fa-f]{64}) [ *](.+)")

Opener = Callable[[Path], BinaryIO]


@dataclass(frozen=True)
class Expected:
    """What one file of a model directory should hash to, and who says so."""

    name: str  # relative to the model directory, as shown to an operator
    file: Path  # the path in the model directory (may be a symlink into blobs/)
    algorithm: str  # SHA256 or GIT_SHA1
    digest: str
    origin: str  # "SHA256SUMS" or "its Hugging Face cache blob name"


@dataclass(frozen=True)
class HashOutcome:
    checked: int  # files whose checksum was compared
    hashed: int  # files read now
    cached: int  # files answered from the cache
    bytes_hashed: int


def expected_checksums(model_dir: Path) -> list[Expected]:
    """Every checksum this directory declares, from SHA256SUMS and from HF cache blob names."""
    found: dict[tuple[str, str], Expected] = {}
    sums = model_dir / SUMS_FILE
    if sums.is_file():
        for item in _read_sums(sums, model_dir):
            found[(item.name, item.algorithm)] = item
    for root, _dirs, files in os.walk(model_dir):
        for filename in files:
            file = Path(root) / filename
            if not file.is_symlink():
                continue
            target = Path(os.path.realpath(file))
            if target.parent.name != "blobs":
                continue
            name = file.relative_to(model_dir).as_posix()
            for algorithm, pattern in _DIGEST.items():
                if pattern.fullmatch(target.name):
                    found.setdefault(
                        (name, algorithm),
                        Expected(name, file, algorithm, target.name, "its Hugging Face cache blob name"),
                    )
    return sorted(found.values(), key=lambda item: item.name)


def _read_sums(sums: Path, model_dir: Path) -> list[Expected]:
    hint = f"regenerate it in {model_dir} with `sha256sum * > {SUMS_FILE}`, or remove it"
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ModelSourceError(f"cannot read {sums}: {err}", hint=hint) from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _SUMS_LINE.fullmatch(line.rstrip("\r"))
        name = match.group(2) if match else ""
        if not match or name.startswith("/") or ".." in Path(name).parts:
            raise ModelSourceError(f"{sums}:{number}: not a sha256sum line: {line[:80]!r}", hint=hint)
        file = model_dir / name
        if not file.is_file():
            raise ModelNotFound(
                f"{name} is listed in {sums} but missing from {model_dir}",
                hint="copy the complete model directory again (an interrupted copy?)",
            )
        out.append(Expected(name, file, SHA256, match.group(1).lower(), SUMS_FILE))
    return out


class HashCache:
    """Digests by (real path, size, mtime_ns), and the directories whose last verify passed.

    ``file`` None keeps everything in memory. A damaged file is ignored and rebuilt; a state
    directory that refuses writes costs only the cache, never a start.
    """

    def __init__(self, file: Path | None) -> None:
        self.file = file
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] | None = None

    @classmethod
    def for_state_dir(cls, state_dir: Path | None) -> HashCache:
        # Without a configured state_dir, the scope's default: root runs the system scope.
        return cls((state_dir or default_state_dir(os.geteuid() != 0)) / CACHE_FILE)

    def lookup(self, real: Path, stat: os.stat_result, algorithm: str) -> tuple[str, ...] | None:
        """The file's digests for ``algorithm`` (DIGESTS), when its size and mtime are unchanged."""
        entry = self._loaded()["files"].get(str(real))
        if not _unchanged(entry, stat):
            return None
        digests = tuple(entry.get(key) for key in DIGESTS[algorithm])
        return digests if all(isinstance(digest, str) for digest in digests) else None

    def store(self, real: Path, stat: os.stat_result, digests: dict[str, str]) -> None:
        with self._lock:
            files = self._loaded()["files"]
            entry = files.get(str(real))
            if not _unchanged(entry, stat):
                entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            files[str(real)] = entry | digests

    def verified(self, model_dir: Path) -> bool:
        """Did the last verify of ``model_dir`` pass, with every file unchanged since?"""
        return self._loaded()["dirs"].get(str(model_dir)) == fingerprint(model_dir)

    def record(self, model_dir: Path, ok: bool) -> None:
        # A failure is recorded too (never a fingerprint), so that merging with an older save
        # cannot bring back a pass.
        self._loaded()["dirs"][str(model_dir)] = fingerprint(model_dir) if ok else "failed"

    def save(self) -> None:
        """Merge with what another process saved meanwhile, drop files that are gone, write atomically."""
        if self.file is None or self._data is None:
            return
        with self._lock:
            merged = _read_cache(self.file)
            for key in ("files", "dirs"):
                merged[key].update(self._data[key])
            merged["files"] = {path: entry for path, entry in merged["files"].items() if os.path.exists(path)}
            try:
                write_atomic(self.file, json.dumps(merged, sort_keys=True), mode=0o600)
            except OSError as err:
                get_logger().warning("hash cache not saved", file=str(self.file), error=str(err))
            self._data = merged

    def _loaded(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            self._data = _read_cache(self.file) if self.file else {"files": {}, "dirs": {}}
        return self._data


def _unchanged(entry: Any, stat: os.stat_result) -> bool:
    return isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns


def _read_cache(file: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as err:
        get_logger().warning("hash cache unreadable, rebuilding it", file=str(file), error=str(err))
        data = {}
    if not isinstance(data, dict):
        data = {}
    return {key: data[key] if isinstance(data.get(key), dict) else {} for key in ("files", "dirs")}


def fingerprint(model_dir: Path) -> str:
    """Names, sizes and mtimes of every file (through symlinks): changes when any file does."""
    rows = []
    for root, _dirs, files in os.walk(model_dir):
        for filename in files:
            file = Path(root) / filename
            try:
                stat = file.stat()
            except OSError:
                continue
            rows.append(f"{file.relative_to(model_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def check_checksums(
    expected: Iterable[Expected],
    cache: HashCache,
    *,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
    workers: int | None = None,
    opener: Opener | None = None,
) -> HashOutcome:
    """Compare every expected digest with the file's; raise ModelSourceError on the first mismatch
    (in name order), naming the file, the expected and the actual digest."""
    expected = list(expected)
    actual: dict[tuple[Path, str], tuple[str, ...]] = {}
    todo: dict[Path, tuple[os.stat_result, set[str]]] = {}
    for item in expected:
        real = Path(os.path.realpath(item.file))
        stat = real.stat()
        digest = None if force else cache.lookup(real, stat, item.algorithm)
        if digest is None:
            todo.setdefault(real, (stat, set()))[1].add(item.algorithm)
        else:
            actual[(real, item.algorithm)] = digest
    cached = len({Path(os.path.realpath(item.file)) for item in expected}) - len(todo)
    meter = _Meter(sum(stat.st_size for stat, _ in todo.values()), len(todo), progress)
    read = opener or (lambda path: path.open("rb", buffering=0))

    def work(real: Path) -> None:
        stat, algorithms = todo[real]
        digests = _hash_file(real, stat.st_size, algorithms, read, meter)
        cache.store(real, stat, digests)
        for algorithm in algorithms:
            actual[(real, algorithm)] = tuple(digests[key] for key in DIGESTS[algorithm])

    if todo:
        count = max(1, min(len(todo), workers or len(os.sched_getaffinity(0))))
        with ThreadPoolExecutor(count, thread_name_prefix="verify") as pool:
            for future in [pool.submit(work, real) for real in sorted(todo, key=lambda p: -todo[p][0].st_size)]:
                future.result()
        meter.finish()
    cache.save()
    for item in expected:
        got = actual[(Path(os.path.realpath(item.file)), item.algorithm)]
        if item.digest not in got:
            label = "sha256" if item.algorithm == SHA256 else "git blob sha1"
            raise ModelSourceError(
                f"{item.name}: {label} mismatch: expected {item.digest} ({item.origin}), actual {got[0]}",
                hint="the file is damaged or was replaced: copy or download it again",
            )
    return HashOutcome(len(expected), len(todo), cached, meter.total)


def _hash_file(real: Path, size: int, algorithms: set[str], read: Opener, meter: _Meter) -> dict[str, str]:
    hashers: dict[str, Any] = {}
    if SHA256 in algorithms:
        hashers[SHA256] = hashlib.sha256()
    if GIT_SHA1 in algorithms:
        hashers["git-sha1"] = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
        hashers["sha1"] = hashlib.sha1(usedforsecurity=False)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with read(real) as stream:
        while True:
            count = stream.readinto(buffer)
            if not count:
                break
            for hasher in hashers.values():
                hasher.update(view[:count])
            meter.add(count)
    meter.file_done()
    return {key: hasher.hexdigest() for key, hasher in hashers.items()}


class _Meter:
    """Bytes and files hashed so far, told to ``progress`` at most every PROGRESS_EVERY seconds."""

    def __init__(self, total: int, files: int, progress: Callable[[str], None] | None) -> None:
        self.total, self.files, self.progress = total, files, progress
        self.done = self.files_done = 0
        self._lock = threading.Lock()
        self._started = self._shown = time.monotonic()
        if progress and files:
            progress(f"verifying checksums: 0/{human_size(total)}, 0/{files} files")

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            if self.progress is None or now - self._shown < PROGRESS_EVERY:
                return
            self._shown = now
            text = self._line(now)
        self.progress(text)

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def finish(self) -> None:
        if self.progress:
            self.progress(self._line(time.monotonic()))

    def _line(self, now: float) -> str:
        rate = self.done / max(now - self._started, 1e-6)
        return (
            f"verifying checksums: {human_size(self.done)}/{human_size(self.total)}, "
            f"{self.files_done}/{self.files} files at {human_size(rate)}/s"
        )
