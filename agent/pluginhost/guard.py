"""The one wrapper around every provider a plugin returns: its exceptions become its own failure.

An AgentError from a provider is the documented way to fail and passes through unchanged. Any
other exception is a bug in that plugin: it becomes the error the call site already handles for
that kind of provider (GpuError for a GPU backend, ModelSourceError for a model source,
PluginError otherwise), naming the plugin, so a launcher or the daemon reports it and goes on.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ..errors import AgentError, GpuError, ModelSourceError, PluginError

# hook -> (what the provider is called in messages, the error its callers handle)
KINDS: dict[str, tuple[str, type[AgentError]]] = {
    "agent_gpu_backends": ("GPU backend", GpuError),
    "agent_model_sources": ("model source", ModelSourceError),
    "agent_health_strategies": ("health strategy", PluginError),
    "agent_post_start_tests": ("test runner", PluginError),
}


# The Protocols' async methods: awaited even when a plugin returns the coroutine from a plain def.
AWAITED = {
    ("agent_model_sources", "resolve"),
    ("agent_model_sources", "verify"),
    ("agent_health_strategies", "check"),
    ("agent_post_start_tests", "run"),
}


def plugin_failure(plugin: str, where: str, err: BaseException, error: type[AgentError] = PluginError) -> AgentError:
    return error(
        f"plugin {plugin!r} failed in {where}: {err!r}",
        hint=f"a bug in plugin {plugin!r}: see 'vllm-agent plugins', report it to its authors, "
        f'or block it in agent.toml: [plugins] block = ["{plugin}"]',
    )


class Guarded:
    """Base of the generated wrapper classes; ``unwrap`` gives the plugin's own object."""

    __slots__ = ("_provider",)

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def unwrap(self) -> Any:
        return self._provider

    def __repr__(self) -> str:
        return f"Guarded({self._provider!r})"


def guard(provider: Any, plugin: str, hook: str) -> Any:
    """A wrapper with the provider's public attributes; its methods raise only AgentErrors."""
    if isinstance(provider, Guarded):
        return provider
    kind, error = KINDS[hook]
    label = f"{kind} {getattr(provider, 'name', '?')!r}"
    namespace: dict[str, Any] = {"__slots__": (), "plugin": plugin}
    for attr in dir(provider):
        if attr.startswith("_") or attr in namespace:
            continue
        value = getattr(provider, attr, None)
        if inspect.ismethod(value) or inspect.isfunction(value):
            asynchronous = inspect.iscoroutinefunction(value) or (hook, attr) in AWAITED
            namespace[attr] = _method(attr, plugin, f"{label}.{attr}()", error, hook, asynchronous)
        else:
            # Class-level properties, not __getattr__: runtime_checkable Protocols (3.12) look
            # attributes up statically.
            namespace[attr] = property(functools.partial(_read, attr))
    cls = type(f"Guarded{type(provider).__name__}", (Guarded,), namespace)
    return cls(provider)


def _read(attr: str, self: Guarded) -> Any:
    return getattr(self._provider, attr)


def _method(
    attr: str, plugin: str, where: str, error: type[AgentError], hook: str, asynchronous: bool
) -> Callable[..., Any]:
    unavailable = hook == "agent_gpu_backends" and attr == "unavailable"

    def call(self: Guarded, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._provider, attr)(*args, **kwargs)
        except AgentError:
            raise
        except Exception as err:
            failure = plugin_failure(plugin, where, err, error)
            if unavailable:  # answers "why can this backend not be used": that is why
                return failure
            raise failure from err

    async def acall(self: Guarded, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._provider, attr)(*args, **kwargs)
        except AgentError:
            raise
        except Exception as err:
            raise plugin_failure(plugin, where, err, error) from err

    return acall if asynchronous else call
