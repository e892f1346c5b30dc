"""What the GPU backends share: probing a vendor library once, and waiting without events."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from vllm_agent.errors import GpuError
from vllm_agent.plugin_api import XidEvent


class ProbedOnce:
    """``unavailable()`` runs ``probe`` the first time only: a host without the driver is told so
    once, and every later caller gets the same reason without touching the library again."""

    def __init__(self, probe: Callable[[], None]) -> None:
        self._probe = probe
        self._lock = threading.Lock()
        self._done = False
        self._reason: GpuError | None = None

    def unavailable(self) -> GpuError | None:
        with self._lock:
            if not self._done:
                try:
                    self._probe()
                except GpuError as err:
                    self._reason = err
                self._done = True
            return self._reason


class NoXids:
    """A watch for a vendor without Xid events: each wait sleeps its timeout (or until closed)."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait(self, timeout: float) -> Sequence[XidEvent]:
        self._closed.wait(timeout)
        return []

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> NoXids:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
