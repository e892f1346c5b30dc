"""The plugin host: entry points, blocking by name, duplicate providers named."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from vllm_agent import hookimpl
from vllm_agent.config.schema import AgentSettings
from vllm_agent.errors import PluginError
from vllm_agent.pluginhost.manager import make_plugin_manager


@dataclass
class Source:
    name: str

    async def resolve(self, deployment, progress):  # noqa: ANN001, ANN201 - the ModelSource shape
        raise AssertionError("these tests never resolve a model")


class SitePlugin:
    def __init__(self, provider: str) -> None:
        self.provider = provider

    @hookimpl
    def agent_model_sources(self, settings):  # noqa: ANN001, ANN201
        return [Source(self.provider)]


def test_built_in_plugins_load_through_entry_points() -> None:
    plugins = make_plugin_manager(AgentSettings())
    rows = {row.name: row for row in plugins.info()}
    assert rows["local"].distribution.startswith("vllm-agent ")
    assert "source:local" in rows["local"].providers
    assert "local" in plugins.model_sources()


def test_blocking_a_plugin_in_agent_toml_removes_it() -> None:
    plugins = make_plugin_manager(AgentSettings(plugins={"block": ["local"]}))
    assert "local" not in plugins.model_sources()
    assert "local" not in {row.name for row in plugins.info()}
    assert plugins.blocked() == ["local"]


def test_two_providers_with_one_name_fail_naming_both_plugins() -> None:
    with pytest.raises(PluginError) as caught:
        make_plugin_manager(AgentSettings(), extra=[("site", SitePlugin("local"))])
    assert "'local'" in caught.value.message and "'site'" in caught.value.message


def test_a_third_party_provider_is_offered_like_a_built_in() -> None:
    plugins = make_plugin_manager(AgentSettings(), extra=[("site", SitePlugin("s3"))])
    assert plugins.provider_plugin("agent_model_sources", "s3") == "site"


def test_asking_for_a_missing_provider_lists_the_available_ones() -> None:
    plugins = make_plugin_manager(AgentSettings())
    with pytest.raises(PluginError) as caught:
        plugins.model_source("nope")
    assert "source: no model source named 'nope'" in caught.value.message
    assert "local" in caught.value.message
