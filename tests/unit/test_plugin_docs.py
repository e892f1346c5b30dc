"""docs/plugins.md documents every hook, every hook parameter and every provider Protocol method.

Introspects agent/hookspecs.py and the Protocols of agent/plugin_api.py, so adding a hook, a
parameter or a method without documenting it fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from vllm_agent import HOOK_API_VERSION, hookspecs, plugin_api
from vllm_agent.testing.contracts import protocol_members

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
HOOKS = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("agent_")}
PROTOCOLS = {
    name: cls
    for name, cls in inspect.getmembers(plugin_api, inspect.isclass)
    if getattr(cls, "_is_protocol", False) and cls.__module__ == plugin_api.__name__
}


def section(title_pattern: str) -> str:
    """The text under the heading matching ``title_pattern`` up to the next heading of any level."""
    found = re.search(rf"^#+ {title_pattern}\n(.*?)(?=^#+ |\Z)", DOC, flags=re.M | re.S)
    assert found, f"docs/plugins.md has no heading matching {title_pattern!r}"
    return found.group(1)


def test_the_introspection_finds_the_surface() -> None:
    assert {"agent_gpu_backends", "agent_event", "agent_select_devices"} <= set(HOOKS)
    assert {"GpuBackend", "ModelSource", "HealthStrategy", "TestRunner", "XidWatch"} <= set(PROTOCOLS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_each_hook_is_documented_with_its_signature_parameters_process_and_example(hook: str) -> None:
    params = list(inspect.signature(HOOKS[hook]).parameters)
    text = section(re.escape(f"`{hook}({', '.join(params)})`") + r"[^\n]*")
    for param in params:
        assert f"`{param}`" in text, f"docs/plugins.md: {hook}: parameter {param!r} is not described"
    assert "**Runs in:**" in text, f"docs/plugins.md: {hook}: which process runs it is not said"
    assert "@hookimpl" in text and f"def {hook}(" in text, f"docs/plugins.md: {hook} has no example"
    firstresult = HOOKS[hook].vllm_agent_spec["firstresult"]
    assert ("*firstresult*" in DOC.split(f"`{hook}(")[1].split("\n")[0]) == firstresult, hook


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_each_protocol_method_is_documented(protocol: str) -> None:
    text = section(re.escape(protocol))
    for member in sorted(protocol_members(PROTOCOLS[protocol])):
        if member == "name":
            continue  # said once for all providers
        assert re.search(rf"`(async )?{member}\b", text), f"docs/plugins.md: {protocol}.{member} is not documented"


def test_the_doc_states_the_current_hook_api_version_and_the_entry_point_group() -> None:
    assert f'`vllm_agent.HOOK_API_VERSION` (now `"{HOOK_API_VERSION}"`)' in DOC
    assert "[project.entry-points.vllm_agent]" in DOC
    assert "[plugins]\n  block = " in DOC
