"""The built-in sources and GPU backends arrive through entry points, like third-party plugins."""

from __future__ import annotations

from vllm_agent.config.schema import AgentSettings
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent_plugins.gpu_rocm import import_amdsmi


def pynvml_imports() -> bool:
    try:
        import pynvml  # noqa: F401
    except Exception:
        return False
    return True


def test_builtin_model_sources_and_gpu_backends_are_registered() -> None:
    plugins = make_plugin_manager(AgentSettings())
    assert {"local", "hf"} <= set(plugins.model_sources())
    assert plugins.provider_plugin("agent_model_sources", "hf") == "huggingface"
    backends = plugins.gpu_backends()
    assert ("nvml" in backends) == pynvml_imports()
    assert ("rocm" in backends) == (import_amdsmi() is not None)  # absent here: amdsmi is not installed


def test_blocking_the_nvml_plugin_removes_its_gpu_backend() -> None:
    plugins = make_plugin_manager(AgentSettings(plugins={"block": ["nvml"]}))
    assert "nvml" not in plugins.gpu_backends()
    assert "nvml" in plugins.blocked()
    assert {"local", "hf"} <= set(plugins.model_sources())
