"""Which GPU backends work on this host, and the one error when none does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import GpuError
from ..plugin_api import GpuBackend, GpuDevice

if TYPE_CHECKING:
    from ..pluginhost.manager import Plugins

NO_BACKEND = "no GPU backend available"


def usable_backends(backends: Mapping[str, GpuBackend]) -> dict[str, GpuBackend]:
    """The backends whose library and driver answered their (one-time) probe."""
    return {name: backend for name, backend in backends.items() if backend.unavailable() is None}


def no_backend_error(backends: Mapping[str, GpuBackend], blocked: list[str] | None = None) -> GpuError | None:
    """None when at least one backend works, else "no GPU backend available: <reason>"."""
    reasons = {name: backend.unavailable() for name, backend in backends.items()}
    if any(reason is None for reason in reasons.values()):
        return None
    if not reasons:
        why = "no plugin offers one" + (f" (blocked: {', '.join(blocked)})" if blocked else "")
        return GpuError(
            f"{NO_BACKEND}: {why}",
            hint="install nvidia-ml-py (NVIDIA) or ROCm's amdsmi (AMD), or remove `gpus` from the deployment",
        )
    errors = [error for error in reasons.values() if error is not None]
    return GpuError(
        f"{NO_BACKEND}: " + "; ".join(error.message for error in errors),
        hint=errors[0].hint or "remove `gpus` from the deployment to run it on the CPU",
    )


def require_backend(backends: Mapping[str, GpuBackend], blocked: list[str] | None = None) -> dict[str, GpuBackend]:
    """The usable backends; GpuError naming every reason when there is none."""
    error = no_backend_error(backends, blocked)
    if error is not None:
        raise error
    return usable_backends(backends)


def usable_devices(plugins: Plugins) -> list[GpuDevice]:
    """Every device of every working backend, for placement; GpuError when no backend works."""
    backends = require_backend(plugins.gpu_backends(), plugins.blocked())
    return [device for backend in backends.values() for device in backend.list_devices()]
