"""Moving a snapshot's files from the Hub into the cache: resumable, cancellable, measured.

huggingface_hub does the HTTP (metadata, redirects, Range requests, retries of a dropped
connection); this module decides where the bytes go. Each file is written to
``blobs/ETAG.incomplete``, a name that stays the same across runs, so an interrupted download
(Ctrl-C, a stop, a crash) resumes from its size. Only a whole file is renamed to its blob and
linked into the snapshot, so the snapshot never holds a partial file.

Workers are daemon threads, not a pool: the interpreter never waits for them at exit, so a
stop or Ctrl-C is not held up by a transfer stuck in a socket read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vllm_agent import __version__
from vllm_agent.progress import Transfer

from .hub_cache import RemoteFile, RepoCache

WORKERS = 8  # as huggingface_hub's snapshot_download
# huggingface_hub reads a response in chunks of constants.DOWNLOAD_CHUNK_SIZE (10 MB) and only
# then counts and writes them: at 100 KB/s that is 100 s without visible progress, long enough
# to look stalled. 256 KB keeps progress (and a stop between chunks) prompt on slow links, at
# no cost in speed on fast ones (see bench/pull.py).
CHUNK_SIZE = 256 * 1024
RATE_WINDOW = 10.0  # seconds of history behind the reported rate


class Cancelled(Exception):
    """The transfer was asked to stop (Ctrl-C, a unit stop, a stall)."""


class Download:
    def __init__(
        self,
        cache: RepoCache,
        commit: str,
        files: Sequence[RemoteFile],
        *,
        endpoint: str,
        token: str | bool,
        workers: int = WORKERS,
    ) -> None:
        self.cache = cache
        self.commit = commit
        self.files = list(files)
        self.endpoint = endpoint
        self.token = token
        self.workers = max(1, min(workers, len(self.files)))
        self.cancel = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[RemoteFile] = queue.SimpleQueue()
        self._running = 0
        self._on_finished: Callable[[], None] = lambda: None
        self.total = sum(item.size for item in self.files)
        self.arrived = 0  # bytes received in this run
        self.done, self.files_done = 0, 0
        missing = {item.path for item in cache.missing(commit, self.files)}
        for item in self.files:
            if item.path in missing:
                self.done += min(_size(cache.incomplete(item.etag)) or 0, item.size)
                self._queue.put(item)
            else:
                self.done += item.size
                self.files_done += 1
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])

    def start(self, on_finished: Callable[[], None] = lambda: None) -> None:
        """Start the workers; ``on_finished`` is called (from a worker thread) when all ended."""
        from huggingface_hub import constants

        self._on_finished = on_finished
        constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK_SIZE)
        self._running = self.workers if not self._queue.empty() else 0
        if not self._running:
            self.finished.set()
            on_finished()
        for index in range(self._running):
            threading.Thread(target=self._work, name=f"hub-download-{index}", daemon=True).start()

    def sample(self) -> Transfer:
        """The progress now, with the rate over the last RATE_WINDOW seconds."""
        now = time.monotonic()
        with self._lock:
            arrived, done, files_done = self.arrived, self.done, self.files_done
        self._samples.append((now, arrived))
        while len(self._samples) > 2 and now - self._samples[1][0] > RATE_WINDOW:
            self._samples.popleft()
        began, before = self._samples[0]
        rate = (arrived - before) / (now - began) if now > began else 0.0
        return Transfer(done, self.total, rate, files_done, len(self.files), arrived)

    def _work(self) -> None:
        try:
            while not self.cancel.is_set():
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                self._fetch(item)
                with self._lock:
                    self.files_done += 1
        except BaseException as err:  # the first failure stops the others; the caller raises it
            with self._lock:
                if self.error is None and not isinstance(err, Cancelled):
                    self.error = err
            self.cancel.set()
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                self.finished.set()
                with contextlib.suppress(RuntimeError):  # its event loop closed: nobody waits
                    self._on_finished()

    def _fetch(self, item: RemoteFile) -> None:
        blob = self.cache.blob(item.etag)
        if _size(blob) != item.size:
            lock = self.cache.lock_file(item.etag)
            lock.parent.mkdir(parents=True, exist_ok=True)
            with lock.open("a") as held:
                # Another pull or unit fetching the same blob: wait for it, then find it whole.
                fcntl.flock(held, fcntl.LOCK_EX)
                if _size(blob) != item.size:
                    self._transfer(item)
        self.cache.link(self.commit, item.path, item.etag)

    def _transfer(self, item: RemoteFile) -> None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(self.cache.repo, item.path, revision=self.commit, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token, library_name="vllm-agent", library_version=__version__)
        meta = get_hf_file_metadata(url, token=self.token, headers=headers, endpoint=self.endpoint)
        location = meta.location or url
        if urlsplit(location).netloc != urlsplit(url).netloc:
            headers.pop("authorization", None)  # a CDN's signed URL: the token stays with the Hub
        partial = self.cache.incomplete(item.etag)
        partial.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("ab") as out:
            resumed = out.tell()
            if resumed > item.size:  # not this file's bytes: start over
                out.truncate(0)
                self._count(-resumed, arrived=False)
                resumed = 0
            http_get(
                location,
                out,
                resume_size=resumed,
                headers=headers,
                expected_size=item.size,
                displayed_filename=item.path,
                tqdm_class=self._bar(),  # type: ignore[arg-type]
            )
        os.replace(partial, self.cache.blob(item.etag))

    def _count(self, size: int, *, arrived: bool = True) -> None:
        with self._lock:
            self.done += size
            if arrived:
                self.arrived += size

    def _bar(self) -> type:
        """A tqdm stand-in for huggingface_hub's http_get: counts bytes and stops a cancelled
        transfer between two chunks (a chunk is written only after this returns)."""
        download = self

        class Bar:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pass

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc_info: object) -> None:
                pass

            def update(self, size: int | float | None = 1) -> None:
                if download.cancel.is_set():
                    raise Cancelled()
                download._count(int(size or 0))

            def close(self) -> None:
                pass

        return Bar


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
