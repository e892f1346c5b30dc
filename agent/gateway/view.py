"""What the daemon tells the gateway about each deployment: one row per deployment, sent on
GET /v1/events each time a row changes. Built from the daemon's status rows (pure code)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ..config.schema import Deployment
from ..urls import WILDCARDS

# Transitions that begin a start, and the one that ends it.
_BEGINS = ("starting", "restarted")


def load_seconds(transitions: Sequence[Mapping[str, Any]]) -> float:
    """How long the latest start that became ready took (its begin to "ready"); 0 if none did."""
    begun = 0.0
    found = 0.0
    for item in transitions:
        kind, at = item.get("kind"), float(item.get("at") or 0.0)
        if kind in _BEGINS:
            begun = at
        elif kind == "ready" and begun:
            found, begun = at - begun, 0.0
    return max(0.0, found)


def started_at(transitions: Sequence[Mapping[str, Any]]) -> float:
    """When the current start began: the latest begin not followed by "ready"; 0 if none."""
    at = 0.0
    for item in transitions:
        if item.get("kind") in _BEGINS:
            at = float(item.get("at") or 0.0)
        elif item.get("kind") == "ready":
            at = 0.0
    return at


def gateway_rows(deployments: Mapping[str, Deployment], statuses: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    by_name = {row["name"]: row for row in statuses}
    for name, deployment in sorted(deployments.items()):
        status = by_name.get(name, {})
        host, port, state = deployment.host, deployment.port or 0, status.get("state", "stopped")
        if deployment.mode == "external" and deployment.url:
            parts = urlsplit(deployment.url)
            host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
            if parts.scheme != "http" or parts.path.strip("/"):
                state = "unroutable"  # the gateway speaks plain HTTP to a host's root, nothing else yet
        transitions = status.get("transitions") or []
        rows.append(
            {
                "name": name,
                "served": deployment.served_name,
                "state": state,
                "host": "127.0.0.1" if host in WILDCARDS else host,
                "port": port,
                "aliases": list(deployment.aliases),
                "fallback": list(deployment.fallback),
                "started_at": started_at(transitions),
                "load_seconds": round(load_seconds(transitions), 3),
            }
        )
    return rows
