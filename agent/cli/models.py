"""`vllm-agent models`: what each source can serve from this host, without a download."""

from __future__ import annotations

import dataclasses
import json
import sys

from ..config.directory import Config
from ..plugin_api import LocalCatalog, LocalModel
from ..pluginhost.manager import Plugins
from ..sizes import human_size


def local_models(config: Config, plugins: Plugins) -> list[LocalModel]:
    deployments = list(config.deployments.values())
    rows: list[LocalModel] = []
    for source in plugins.model_sources().values():
        if isinstance(source, LocalCatalog):
            rows += source.local_models(deployments)
    return rows


def models(config: Config, plugins: Plugins, *, as_json: bool) -> int:
    rows = local_models(config, plugins)
    if as_json:
        out = [
            dataclasses.asdict(row) | {"path": str(row.path), "refs": list(row.refs), "used_by": list(row.used_by)}
            for row in rows
        ]
        json.dump({"models": out}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print("no models on this host (looked in the Hugging Face cache, model_dirs and local deployments)")
        return 0
    table = [("SOURCE", "MODEL", "REVISION", "SIZE", "VERIFIED", "USED BY", "PATH")]
    for row in rows:
        revision = ",".join(row.refs) or (row.revision or "-")[:12]
        if row.refs and row.revision:
            revision += f" ({row.revision[:12]})"
        verified, users = "yes" if row.verified else "no", ",".join(row.used_by) or "-"
        table.append((row.source, row.id, revision, human_size(row.size), verified, users, str(row.path)))
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]) - 1)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])
    return 0
