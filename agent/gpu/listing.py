"""GPU devices for the daemon's reconcile, listed off the event loop.

Vendor libraries (NVML, amdsmi) are synchronous and can hang (a lost GPU, a wedged driver). The
daemon lists devices in a thread of their own, waits a bounded time, and renders with that
listing; a backend that did not answer fails the deployments that need it (with a reason), not
the daemon. A hung listing is waited for again next time, never started twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import AgentError, GpuError
from ..plugin_api import GpuBackend, GpuDevice, GpuSnapshot
from ..pluginhost.manager import Plugins

TIMEOUT = 10.0  # seconds a backend may take to list its devices


class _Listed:
    """A backend as listed: its device snapshots, or why it could not list them."""

    def __init__(self, name: str, devices: Sequence[GpuSnapshot] = (), error: AgentError | None = None) -> None:
        self.name = name
        self._devices = list(devices)
        self._error = error

    def unavailable(self) -> AgentError | None:
        return self._error

    def snapshot(self) -> list[GpuSnapshot]:
        if self._error is not None:
            raise self._error
        return list(self._devices)

    def list_devices(self) -> Sequence[GpuDevice]:
        return self.snapshot()


class ListedPlugins:
    """The plugins, with ``gpu_backends()`` answered from a listing already taken."""

    def __init__(self, plugins: Plugins, backends: dict[str, GpuBackend]) -> None:
        self._plugins = plugins
        self._backends = backends

    def gpu_backends(self) -> dict[str, GpuBackend]:
        return dict(self._backends)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plugins, name)


class GpuLister:
    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self._running: dict[str, asyncio.Future[Sequence[GpuSnapshot]]] = {}  # by backend name

    async def listed(self, plugins: Plugins) -> ListedPlugins:
        backends = plugins.gpu_backends()
        found = await asyncio.gather(*(self._list(name, backend) for name, backend in backends.items()))
        return ListedPlugins(plugins, {item.name: item for item in found})  # type: ignore[misc]

    async def _list(self, name: str, backend: GpuBackend) -> _Listed:
        future = self._running.get(name)
        if future is None or future.done():
            if future is not None and not future.cancelled():
                future.exception()  # seen (it was returned, or reported as a timeout, before)
            future = self._running[name] = self._start(backend)
        try:
            devices = await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            return _Listed(
                name,
                error=GpuError(
                    f"the {name!r} GPU backend did not list its devices within {self.timeout:g}s",
                    hint="check the driver ('nvidia-smi' or 'amd-smi'); the daemon asks again on the next reload",
                ),
            )
        except AgentError as err:
            return _Listed(name, error=err)
        except Exception as err:  # a plugin bug: name it, keep the daemon
            return _Listed(name, error=GpuError(f"the {name!r} GPU backend failed: {err!r}"))
        return _Listed(name, devices)

    @staticmethod
    def _start(backend: GpuBackend) -> asyncio.Future[Sequence[GpuSnapshot]]:
        """Run list_devices in a daemon thread of its own: a hung library blocks only that thread,
        not the loop and not the default executor that the daemon's file I/O uses."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Sequence[GpuSnapshot]] = loop.create_future()

        def settle(result: Sequence[GpuSnapshot] | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result or [])

        def run() -> None:
            try:
                reason = backend.unavailable()
                if reason is not None:
                    raise reason
                result, error = list(backend.snapshot()), None
            except BaseException as err:  # handed to the loop, raised there
                result, error = None, err
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:
                pass  # the loop closed while the library hung: nobody waits any more

        threading.Thread(target=run, name=f"gpu-list-{backend.name}", daemon=True).start()
        return future
