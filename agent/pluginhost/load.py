"""Loading plugins one at a time, so that a broken or incompatible plugin is reported and skipped.

pluggy's ``load_setuptools_entrypoints`` stops at the first plugin that fails to import; here each
entry point is imported, checked against HOOK_API_VERSION and registered on its own, and what
happened to it is kept as a PluginRecord for ``vllm-agent plugins`` and for error messages.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, replace
from typing import Literal

import pluggy

from .. import HOOK_API_ATTRIBUTE, HOOK_API_VERSION

IN_CODE = "(registered in code)"
Status = Literal["loaded", "blocked", "refused", "failed"]


@dataclass(frozen=True)
class PluginRecord:
    name: str
    distribution: str  # "vllm-agent 0.1.0", or IN_CODE
    hook_api: str  # the range the plugin declares, "" when it declares none
    status: Status
    reason: str = ""  # why it is blocked, refused or failed

    def failed(self, reason: str) -> PluginRecord:
        # A second failure (another hook) adds to the first rather than hiding it.
        return replace(self, status="failed", reason=f"{self.reason}; {reason}" if self.reason else reason)


def declared_api(plugin: object) -> str:
    value = getattr(plugin, HOOK_API_ATTRIBUTE, "")
    return value if isinstance(value, str) else repr(value)


def refusal(name: str, plugin: object) -> str | None:
    """Why this plugin cannot run against our hook API, as one line; None when it can."""
    declared = declared_api(plugin)
    if not declared:
        return None  # no declaration: trusted, as before versioning
    # Only here: every launcher loads the plugins, few plugins declare a range.
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        supported = SpecifierSet(declared)
    except InvalidSpecifier:
        return f"plugin {name!r} declares {HOOK_API_ATTRIBUTE} = {declared!r}, which is not a version range"
    if supported.contains(HOOK_API_VERSION, prereleases=True):
        return None
    return f"plugin {name!r} supports hook API {declared}; this vllm-agent has hook API {HOOK_API_VERSION}"


def load_entry_points(pm: pluggy.PluginManager, group: str) -> list[PluginRecord]:
    """Import, check and register every entry point of ``group``; never raises for a plugin."""
    records: list[PluginRecord] = []
    seen: set[str] = set()
    for dist in list(importlib.metadata.distributions()):
        for ep in dist.entry_points:
            if ep.group != group or ep.name in seen:
                continue
            seen.add(ep.name)
            label = f"{dist.metadata['name']} {dist.version}"
            if pm.is_blocked(ep.name):
                records.append(PluginRecord(ep.name, label, "", "blocked", "blocked in agent.toml"))
                continue
            try:
                plugin = ep.load()
            except Exception as err:  # its own bug: reported, the others still load
                records.append(PluginRecord(ep.name, label, "", "failed", f"import failed: {err!r}"))
                continue
            records.append(register(pm, ep.name, plugin, label))
    return records


def register(pm: pluggy.PluginManager, name: str, plugin: object, distribution: str = IN_CODE) -> PluginRecord:
    api = declared_api(plugin)
    refused = refusal(name, plugin)
    if refused is not None:
        return PluginRecord(name, distribution, api, "refused", refused)
    try:
        pm.register(plugin, name=name)
    except Exception as err:  # a hook with wrong parameters, say
        return PluginRecord(name, distribution, api, "failed", f"registration failed: {err}")
    return PluginRecord(name, distribution, api, "loaded")


def drop_unknown_hooks(pm: pluggy.PluginManager, records: list[PluginRecord]) -> list[PluginRecord]:
    """check_pending, plugin by plugin: one implementing a hook we do not have is unregistered."""
    while True:
        try:
            pm.check_pending()
            return records
        except pluggy.PluginValidationError as err:
            name = pm.get_name(err.plugin)
            pm.unregister(err.plugin)
            records = [
                record.failed(f"registration failed: {err}") if record.name == name else record for record in records
            ]
