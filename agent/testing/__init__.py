"""The testing kit for plugin authors, shipped with vllm-agent and registered as a pytest plugin.

``pip install vllm-agent`` makes these fixtures available in any pytest run (entry point
``pytest11: vllm_agent``); see docs/plugins.md, "Testing a plugin":

- ``agent_plugins(plugin, name=..., builtins=False)``: a plugin manager with your plugin registered
- ``fake_engine``: a running fake vLLM server (``.target`` is an EngineTarget; ``start(...)`` more)
- ``fake_pynvml`` / ``fake_amdsmi``: the fake vendor libraries, with the real call signatures
- ``fake_unit_manager``: an in-memory systemd unit manager with the agent's UnitManager interface
- ``systemd_user_manager``: a real private systemd user manager, where this host can run one

and the contract suites below, which the built-in providers pass too.
"""

from __future__ import annotations

from .contracts import (
    check_event_sink,
    check_gpu_backend,
    check_health_strategy,
    check_model_source,
    check_test_runner,
    unreachable_target,
)

__all__ = [
    "check_event_sink",
    "check_gpu_backend",
    "check_health_strategy",
    "check_model_source",
    "check_test_runner",
    "unreachable_target",
]
