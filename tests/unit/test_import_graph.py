"""The folders of agent/ are the architecture: the import graph must say so too.

Read from the sources (module-level imports; those under ``if TYPE_CHECKING`` and inside functions
run later or never), so a new import that breaks a rule fails here with the chain that breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"


def _module_name(path: Path) -> str:
    parts = ["vllm_agent", *path.relative_to(AGENT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in AGENT.rglob("*.py")}


def _imports_at_load(module: str) -> set[str]:
    """The project modules importing ``module`` loads at once (its package's __init__ included)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    pending: list[ast.stmt] = list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless they are this module's own
    # packages, which Python has already begun to load before this module.
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    for name in list(found):
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts))} - own
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: _imports_at_load(module) for module in MODULES}


def _path(start: str, goal: str, *, under: bool = True) -> list[str] | None:
    """The shortest chain of module-level imports from ``start`` to ``goal`` (or a module under it)."""
    chains = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for module in frontier:
            for target in sorted(GRAPH[module]):
                if target in chains:
                    continue
                chains[target] = chains[module] + [target]
                if target == goal or (under and target.startswith(goal + ".")):
                    return chains[target]
                nxt.append(target)
        frontier = nxt
    return None


def test_the_graph_reads_the_tree_it_checks() -> None:
    # A rule over an empty or misread graph would pass for nothing.
    assert "vllm_agent.unit.launcher" in GRAPH
    assert "vllm_agent.unit.supervise" in GRAPH["vllm_agent.unit.launcher"]
    assert "vllm_agent.config" in GRAPH["vllm_agent.cli.validate"]  # a package's __init__ runs first
    assert _path("vllm_agent.unit.launcher", "vllm_agent.config.schema", under=False) is not None
    assert _path("vllm_agent.daemon.main", "vllm_agent.unit") is not None  # it notifies systemd as the unit does


def test_no_module_imports_itself_through_others() -> None:
    for module in GRAPH:
        for target in GRAPH[module]:
            back = _path(target, module, under=False)
            if back is not None:
                pytest.fail("import cycle: " + " -> ".join([module, *back]))


@pytest.mark.parametrize(
    ("room", "must_not_reach"),
    [
        # The unit starts, serves and heals without the daemon or the CLI.
        ("vllm_agent.unit", "vllm_agent.daemon"),
        ("vllm_agent.unit", "vllm_agent.cli"),
        ("vllm_agent.daemon", "vllm_agent.cli"),
        # Configuration is read by all three processes and depends on none of them.
        ("vllm_agent.config", "vllm_agent.unit"),
        ("vllm_agent.config", "vllm_agent.daemon"),
        ("vllm_agent.config", "vllm_agent.cli"),
        ("vllm_agent.config", "vllm_agent.deployments"),
        # Only systemd/ talks D-Bus, and the plugin-facing surface stays light.
        ("vllm_agent.plugin_api", "vllm_agent.systemd"),
        ("vllm_agent.config", "vllm_agent.systemd"),
    ],
)
def test_rooms_keep_to_their_side(room: str, must_not_reach: str) -> None:
    for module in sorted(m for m in GRAPH if m == room or m.startswith(room + ".")):
        chain = _path(module, must_not_reach)
        assert chain is None, f"{room} must not import {must_not_reach}: " + " -> ".join(chain)


def test_only_the_systemd_package_imports_sdbus() -> None:
    outside = sorted(
        module
        for module, path in MODULES.items()
        if not module.startswith("vllm_agent.systemd")
        and any(
            isinstance(n, (ast.Import, ast.ImportFrom))
            and any(
                name.split(".")[0] == "sdbus" for name in [getattr(n, "module", None) or ""] + [a.name for a in n.names]
            )
            for n in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert outside == []
