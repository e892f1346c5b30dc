"""Where the agent's start-up cost goes (issue 14): import profiles and what each library costs.

Used by bench/lean.py; nothing here starts a unit. The data:

- ``Profile``: a ``python -X importtime`` profile of a real command or unit, with the top
  cumulative imports, the packages it loads and what each named library cost inside it;
- ``import_floor()`` / ``import_memory()``: a fresh interpreter importing exactly what a profiled
  process imported: that process's wall time and RSS/USS without its work;
- ``alone_costs()``: each library imported alone in a fresh interpreter (its import time and the
  RSS/USS it adds, from smaps_rollup before and after), and all of them in a chain;
- ``budgets()``: what sets of libraries weigh as a whole process.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

# Libraries the issue names: (label, top-level package, code run after the baseline is read).
# pydantic builds one model too: its lazy __init__ defers the real cost to the first model class,
# and that is where it scans entry points for pydantic plugins.
LIBRARIES: list[tuple[str, str, str]] = [
    ("asyncio", "asyncio", "import asyncio"),
    ("httpx", "httpx", "import httpx"),
    ("pydantic (+ one model class)", "pydantic", "import pydantic\nclass M(pydantic.BaseModel):\n    x: int = 0"),
    ("structlog", "structlog", "import structlog"),
    ("sdbus", "sdbus", "import sdbus"),
    ("pluggy", "pluggy", "import pluggy"),
    (
        "entry points: scan group vllm_agent",
        "",
        "from importlib.metadata import entry_points\neps = entry_points(group='vllm_agent')",
    ),
    (
        "entry points: scan + load the built-in plugins",
        "",
        "from importlib.metadata import entry_points\n"
        "mods = [ep.load() for ep in entry_points(group='vllm_agent') if ep.dist.name == 'vllm-agent']",
    ),
    ("huggingface_hub", "huggingface_hub", "import huggingface_hub\nhuggingface_hub.hf_hub_download"),
    ("pynvml", "pynvml", "import pynvml"),
    ("uvloop", "uvloop", "import uvloop"),
    ("httptools", "httptools", "import httptools"),
    ("pyroute2", "pyroute2", "import pyroute2"),
    ("packaging.specifiers", "packaging", "import packaging.specifiers"),
    ("the CLI module (vllm_agent.cli, the console entry)", "vllm_agent", "import vllm_agent.cli"),
]
_MODEL = "import pydantic\nclass M(pydantic.BaseModel):\n    x: int = 0\n"
# Sets of libraries a leaner process could be left with: what they weigh before any agent code.
BUDGETS: list[tuple[str, str]] = [
    (
        "stdlib only (os, socket, json, tomllib, signal, subprocess)",
        "import os, socket, json, tomllib, signal, subprocess",
    ),
    ("asyncio", "import asyncio"),
    ("asyncio + sdbus + tomllib (a lean start or status over D-Bus)", "import asyncio, sdbus, tomllib"),
    ("asyncio + structlog + pluggy", "import asyncio, structlog, pluggy"),
    ("asyncio + structlog + pluggy + httpx", "import asyncio, structlog, pluggy, httpx"),
    ("asyncio + structlog + pluggy + pydantic model", "import asyncio, structlog, pluggy\n" + _MODEL),
    (
        "asyncio + structlog + pluggy + httpx + pydantic model (the launcher's set today)",
        "import asyncio, structlog, pluggy, httpx\n" + _MODEL,
    ),
    ("asyncio + structlog + pluggy + sdbus", "import asyncio, structlog, pluggy, sdbus"),
    ("asyncio + structlog + pluggy + sdbus + httpx", "import asyncio, structlog, pluggy, sdbus, httpx"),
    ("asyncio + structlog + pluggy + sdbus + pydantic model", "import asyncio, structlog, pluggy, sdbus\n" + _MODEL),
    (
        "asyncio + structlog + pluggy + sdbus + httpx + pydantic model (the daemon's set today)",
        "import asyncio, structlog, pluggy, sdbus, httpx\n" + _MODEL,
    ),
]
# Packages whose share of each profile is reported (the top-level name in the import system).
PACKAGES = (
    "vllm_agent",
    "vllm_agent_plugins",
    "httpx",
    "pydantic",
    "pydantic_core",
    "structlog",
    "sdbus",
    "pluggy",
    "huggingface_hub",
    "pynvml",
    "uvloop",
    "httptools",
    "pyroute2",
    "asyncio",
    "importlib",
    "packaging",
)

# Runs each code in turn in one interpreter: its import time and the RSS and USS it added.
_MEASURE = """
import json, time
def mem():
    f = dict(line.split(':') for line in open('/proc/self/smaps_rollup').read().splitlines()[1:])
    kb = lambda key: int(f[key].split()[0])
    return kb('Rss'), kb('Private_Clean') + kb('Private_Dirty')
out = []
for code in {codes!r}:
    (rss, uss), began = mem(), time.perf_counter()
    exec(compile(code, 'lib', 'exec'), {{}})
    took, (rss1, uss1) = (time.perf_counter() - began) * 1000, mem()
    out.append({{'ms': took, 'kb': rss1 - rss, 'uss_kb': uss1 - uss, 'base_kb': rss, 'base_uss_kb': uss}})
print(json.dumps(out))
"""


@dataclass
class Entry:
    name: str
    self_us: int
    cumulative_us: int
    depth: int
    parent: str  # the nearest enclosing import, "" at top level


@dataclass
class Profile:
    what: str
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def parse(cls, what: str, text: str) -> Profile:
        """From text holding ``import time: self | cumulative | name`` lines (others ignored).
        Python prints an import when it completes: children come before their parent."""
        raw = []
        for line in text.splitlines():
            if not line.startswith("import time:") or "[us]" in line:
                continue
            self_us, cumulative, name = line[len("import time:") :].split("|", 2)
            depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
            raw.append((name.strip(), int(self_us), int(cumulative), depth))
        entries: list[Entry] = []
        stack: list[str] = []
        for name, self_us, cumulative, depth in reversed(raw):  # parents first
            del stack[depth:]
            entries.append(Entry(name, self_us, cumulative, depth, stack[-1] if stack else ""))
            stack.append(name)
        entries.reverse()
        return cls(what, entries)

    def total_ms(self) -> float:
        return sum(e.cumulative_us for e in self.entries if e.depth == 0) / 1000

    def top_cumulative(self, count: int = 12) -> list[Entry]:
        return sorted(self.entries, key=lambda e: e.cumulative_us, reverse=True)[:count]

    def package_ms(self, package: str) -> float:
        """Import time spent on ``package`` in this process, with whatever it pulled in first:
        the cumulative time of each import of it (or a submodule) that another module made."""
        inside = [e for e in self.entries if _top(e.name) == package]
        return sum(e.cumulative_us for e in inside if _top(e.parent) != package) / 1000

    def packages(self) -> list[str]:
        return sorted({_top(e.name) for e in self.entries})

    def modules(self, prefix: str) -> list[str]:
        return sorted(e.name for e in self.entries if e.name == prefix or e.name.startswith(prefix + "."))

    def roots(self) -> list[str]:
        """What the process imported, as the top-level imports in their order (plugin modules
        loaded through entry points show up only as what they import)."""
        return [e.name for e in self.entries if e.depth == 0]

    def to_json(self) -> dict[str, object]:
        return {
            "what": self.what,
            "total_ms": round(self.total_ms(), 1),
            "top": [[e.name, e.cumulative_us, e.self_us] for e in self.top_cumulative(25)],
            "packages": {p: round(self.package_ms(p), 1) for p in PACKAGES},
            "modules": [[e.name, e.cumulative_us, e.self_us, e.depth] for e in self.entries],
        }


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def import_floor(python: str, env: dict[str, str], profile: Profile, runs: int, exit_fast: bool = True) -> list[float]:
    """Wall seconds of a fresh interpreter that only imports what ``profile``'s process imported:
    that process's floor, without its work. ``exit_fast``: end with os._exit, as the interpreter's
    teardown of ~500 modules is not part of a start; without it, the exit as a CLI command pays it."""
    code = _import_code([profile]) + ("os._exit(0)" if exit_fast else "")
    took = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([python, "-c", code], env=env, capture_output=True, timeout=120, check=True)
        took.append(time.perf_counter() - began)
    return took


def import_memory(python: str, env: dict[str, str], profiles: list[Profile]) -> tuple[float, float]:
    """(RSS, USS) in MB of a fresh interpreter that imported what ``profiles`` (one process's
    life, maybe in parts) imported: the part of that process's memory its imports explain."""
    code = _import_code(profiles) + (
        "f = dict(line.split(':') for line in open('/proc/self/smaps_rollup').read().splitlines()[1:])\n"
        "kb = lambda key: int(f[key].split()[0])\n"
        "print(kb('Rss'), kb('Private_Clean') + kb('Private_Dirty'), flush=True)\nos._exit(0)"
    )
    done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    rss, uss = map(int, done.stdout.split())
    return rss / 1024, uss / 1024


def _import_code(profiles: list[Profile]) -> str:
    """Python that imports every top-level import of ``profiles`` in order, and the built-in
    plugin modules when they loaded plugins (entry points are not in the profiles)."""
    names = [name for profile in profiles for name in profile.roots()]
    if any(profile.modules("vllm_agent_plugins") for profile in profiles):
        names += ["vllm_agent_plugins." + ep.value.split(".", 1)[1] for ep in _builtin_entry_points()]
    return (
        f"import importlib, os\nfor n in {names!r}:\n    try: importlib.import_module(n)\n    except Exception: pass\n"
    )


def _builtin_entry_points() -> list[EntryPoint]:
    return [ep for ep in entry_points(group="vllm_agent") if ep.dist is not None and ep.dist.name == "vllm-agent"]


def third_party_plugins() -> list[str]:
    """Entry-point names of plugins from other distributions (in this venv: the test plugins and
    the example), to block: the figures are for an install of vllm-agent alone."""
    return sorted(ep.name for ep in entry_points(group="vllm_agent") if ep.dist is None or ep.dist.name != "vllm-agent")


def _measure(python: str, env: dict[str, str], codes: list[str], runs: int) -> list[dict[str, float]] | None:
    """Median over ``runs`` fresh interpreters of each code's ms and MB, run in order in each."""
    samples = []
    for _ in range(runs):
        done = subprocess.run(
            [python, "-c", _MEASURE.format(codes=codes)], env=env, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            print(f"  [costs] {codes[-1]!r} failed: {done.stderr.strip()[-300:]}", file=sys.stderr, flush=True)
            return None
        samples.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return [
        {
            "ms": statistics.median(s[i]["ms"] for s in samples),
            "rss_mb": statistics.median(s[i]["kb"] for s in samples) / 1024,
            "uss_mb": statistics.median(s[i]["uss_kb"] for s in samples) / 1024,
            "base_mb": statistics.median(s[i]["base_kb"] for s in samples) / 1024,
            "base_uss_mb": statistics.median(s[i]["base_uss_kb"] for s in samples) / 1024,
        }
        for i in range(len(codes))
    ]


def alone_costs(python: str, env: dict[str, str], runs: int = 3) -> dict[str, dict[str, float]]:
    """Each of LIBRARIES alone in a fresh interpreter (median of ``runs``), and in a chain: all
    of them one after the other in one interpreter, each row adding what the rows above lacked."""
    out: dict[str, dict[str, float]] = {}
    for label, _package, code in LIBRARIES:
        measured = _measure(python, env, [code], runs)
        if measured:
            out[label] = measured[0]
    chain = _measure(python, env, [code for _label, _package, code in LIBRARIES], runs)
    for (label, _package, _code), cost in zip(LIBRARIES, chain or [], strict=False):
        if label in out:
            out[label] |= {"chain_ms": cost["ms"], "chain_rss_mb": cost["rss_mb"], "chain_uss_mb": cost["uss_mb"]}
    return out


def budgets(python: str, env: dict[str, str], runs: int = 3) -> dict[str, dict[str, float]]:
    """Each of BUDGETS in a fresh interpreter: its import ms and the whole process's RSS and USS."""
    out = {}
    for label, code in BUDGETS:
        measured = _measure(python, env, [code], runs)
        if measured:
            cost = measured[0]
            out[label] = {
                "ms": cost["ms"],
                "rss_mb": cost["base_mb"] + cost["rss_mb"],
                "uss_mb": cost["base_uss_mb"] + cost["uss_mb"],
            }
    return out


def report(profiles: list[Profile], alone: dict[str, dict[str, float]], weights: dict[str, dict[str, float]]) -> str:
    """Markdown: the libraries side by side, what sets of them weigh, each profile's top imports."""
    lines = ["### What sets of libraries weigh (a whole interpreter, no agent code)", ""]
    lines += ["| libraries | import ms | RSS MB | USS MB |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['ms']:.0f} | {v['rss_mb']:.1f} | {v['uss_mb']:.1f} |" for k, v in weights.items()]
    lines += ["", "### What each library costs", ""]
    heads = " | ".join(f"in `{p.what}` ms" for p in profiles)
    lines += [
        "| library | alone: ms | alone: RSS MB | alone: USS MB | chain: ms | chain: RSS MB | chain: USS MB | "
        f"{heads} |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(profiles),
    ]
    packages = {label: package for label, package, _code in LIBRARIES}
    for label, cost in alone.items():
        package = packages[label]
        inside = " | ".join(_in(p, package) for p in profiles)
        chain = " | ".join(f"{cost.get(key, 0):.1f}" for key in ("chain_ms", "chain_rss_mb", "chain_uss_mb"))
        lines.append(
            f"| {label} | {cost['ms']:.1f} | {cost['rss_mb']:.1f} | {cost['uss_mb']:.1f} | {chain} | {inside} |"
        )
    first = next(iter(alone.values()), {})
    if first:
        lines.append(
            f"\nA bare interpreter of this venv (site, the editable-install finder) is {first['base_mb']:.1f} MB RSS, "
            f"{first['base_uss_mb']:.1f} MB USS. Chain: every row imported one after the other in one interpreter, "
            "in this order; each row adds what the rows above had not loaded yet."
        )
    for profile in profiles:
        lines += [
            "",
            f"### `{profile.what}`: {profile.total_ms():.0f} ms of imports, {len(profile.entries)} modules",
            "",
        ]
        lines += ["| import (cumulative, any depth) | cumulative ms | self ms |", "|---|---:|---:|"]
        lines += [
            f"| {e.name} | {e.cumulative_us / 1000:.1f} | {e.self_us / 1000:.1f} |" for e in profile.top_cumulative()
        ]
        own = {e.name.removeprefix("vllm_agent.") for e in profile.entries if e.name.startswith("vllm_agent.")}
        lines.append(f"\nIts vllm_agent modules ({len(own)}): {', '.join(sorted(own))}.")
        third = [p for p in profile.packages() if p in PACKAGES or p in ("anyio", "httpcore", "h11", "certifi", "ssl")]
        lines.append(f"Packages named above that it loads: {', '.join(third) or 'none'}.")
    lines.append(
        "\nPlugin modules loaded through entry points (importlib.import_module) are not listed by "
        "`-X importtime`, only the modules they import in turn; their cost is in the row "
        "'entry points: scan + load the built-in plugins'."
    )
    return "\n".join(lines)


def _in(profile: Profile, package: str) -> str:
    if package not in PACKAGES:
        return ""
    return "-" if not profile.modules(package) else f"{profile.package_ms(package):.1f}"
