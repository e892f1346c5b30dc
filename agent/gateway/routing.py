"""Which engine answers a request: pure code over the daemon's live view and agent.toml's routes.

A request's ``model`` is looked up, in order: exact served names, aliases, then the
``[[gateway.routes]]`` patterns. What it finds is a pool (every deployment answering to that
name) and a fallback chain. Only ready deployments are candidates; within a group the one with
the fewest outstanding requests goes first. Nothing here does I/O, so every rule is unit-tested.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config.schema import GatewayRoute

READY = "ready"
# Retry-After when a deployment is starting but how long its load takes is not known yet.
UNKNOWN_ETA = 5
MAX_ETA = 600


@dataclass(frozen=True)
class Member:
    """One deployment as the gateway sees it, from the daemon's event stream."""

    name: str
    served: str
    state: str
    host: str = "127.0.0.1"
    port: int = 0
    aliases: tuple[str, ...] = ()
    fallback: tuple[str, ...] = ()
    started_at: float = 0.0  # epoch seconds this invocation began
    load_seconds: float = 0.0  # how long its last start took to become ready; 0: not known

    @property
    def ready(self) -> bool:
        return self.state == READY and self.port > 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Member:
        return cls(
            name=str(row["name"]),
            served=str(row.get("served") or row["name"]),
            state=str(row.get("state", "")),
            host=str(row.get("host") or "127.0.0.1"),
            port=int(row.get("port") or 0),
            aliases=tuple(row.get("aliases") or ()),
            fallback=tuple(row.get("fallback") or ()),
            started_at=float(row.get("started_at") or 0.0),
            load_seconds=float(row.get("load_seconds") or 0.0),
        )


@dataclass(frozen=True)
class Plan:
    """What a model name resolved to: the pool, then the fallback targets in order."""

    model: str
    pool: tuple[str, ...]  # deployment names
    fallback: tuple[tuple[str, ...], ...] = ()  # each target's deployments, in chain order


@dataclass
class Table:
    members: dict[str, Member] = field(default_factory=dict)
    routes: Sequence[GatewayRoute] = ()
    _by_name: dict[str, list[str]] = field(default_factory=dict)  # served names and aliases
    _patterns: list[tuple[re.Pattern[str], GatewayRoute]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for member in self.members.values():
            for name in (member.served, *member.aliases):
                pool = self._by_name.setdefault(name, [])
                if member.name not in pool:
                    pool.append(member.name)
        self._patterns = [(re.compile(route.match), route) for route in self.routes]

    @classmethod
    def build(cls, rows: Iterable[Mapping[str, Any]], routes: Sequence[GatewayRoute] = ()) -> Table:
        members = {m.name: m for m in map(Member.from_row, rows)}
        return cls(members=dict(sorted(members.items())), routes=routes)

    # Lookup ------------------------------------------------------------------------------------

    def target(self, name: str) -> tuple[str, ...]:
        """The deployments a name in ``to``/``fallback`` means: a served name or alias (its whole
        pool), else a deployment name."""
        if name in self._by_name:
            return tuple(self._by_name[name])
        return (name,) if name in self.members else ()

    def resolve(self, model: str) -> Plan | None:
        """None: no deployment answers to ``model`` (a 404, not a 503)."""
        pool = self._by_name.get(model)
        if pool:
            chain: list[str] = []
            for name in pool:
                chain.extend(n for n in self.members[name].fallback if n not in chain)
            return self._plan(model, tuple(pool), chain)
        for pattern, route in self._patterns:
            if model == route.match or pattern.fullmatch(model):
                members = tuple(dict.fromkeys(n for target in route.to for n in self.target(target)))
                return self._plan(model, members, route.fallback)
        return None

    def _plan(self, model: str, pool: tuple[str, ...], chain: Iterable[str]) -> Plan:
        fallback = []
        seen = set(pool)
        for target in chain:
            group = tuple(n for n in self.target(target) if n not in seen)
            seen.update(group)
            if group:
                fallback.append(group)
        return Plan(model=model, pool=pool, fallback=tuple(fallback))

    # Choosing ----------------------------------------------------------------------------------

    def candidates(
        self, plan: Plan, outstanding: Mapping[str, int], exclude: Iterable[str] = (), pool_only: bool = False
    ) -> list[Member]:
        """Ready deployments in the order to try them: the pool by fewest outstanding requests,
        then each fallback target likewise. ``exclude``: those that already failed this request."""
        skip = set(exclude)
        groups = [plan.pool] if pool_only else [plan.pool, *plan.fallback]
        found: list[Member] = []
        for group in groups:
            ready = [self.members[n] for n in group if n not in skip and n in self.members and self.members[n].ready]
            found.extend(sorted(ready, key=lambda m: outstanding.get(m.name, 0)))  # stable: file order on ties
        return found

    def retry_after(self, plan: Plan, now: float) -> int | None:
        """Seconds until the soonest starting deployment of the plan should be ready; None when
        none is starting (waiting would not help)."""
        names = [*plan.pool, *(n for group in plan.fallback for n in group)]
        etas = [eta(self.members[n], now) for n in names if n in self.members and self.members[n].state == "starting"]
        return min(etas) if etas else None

    def unresolved(self) -> list[str]:
        """Names in routes and fallback chains that no deployment answers to, each as one line
        naming where it is written (a typo, or a deployment that is gone)."""
        found = []
        for index, route in enumerate(self.routes):
            for key in ("to", "fallback"):
                for name in getattr(route, key):
                    if not self.target(name):
                        found.append(f"agent.toml: gateway.routes[{index}].{key}: no deployment answers to {name!r}")
        for member in self.members.values():
            for name in member.fallback:
                if not self.target(name):
                    found.append(f"models.d/{member.name}.toml: fallback: no deployment answers to {name!r}")
        return found

    def routable(self) -> list[str]:
        """Names a client can use now: those with a ready deployment in their pool or chain."""
        names = []
        for name in self._by_name:
            plan = self.resolve(name)
            if plan is not None and self.candidates(plan, {}):
                names.append(name)
        return names


def eta(member: Member, now: float) -> int:
    """Whole seconds until a starting deployment should be ready, from how long its last start
    took; at least 1."""
    if member.load_seconds <= 0 or member.started_at <= 0:
        return UNKNOWN_ETA
    left = member.load_seconds - max(0.0, now - member.started_at)
    return int(min(MAX_ETA, max(1, math.ceil(left))))
