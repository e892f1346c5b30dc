"""`vllm-agent gpus`: every device with memory, load, health and who runs on it."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from ..errors import GpuError
from ..plugin_api import GpuBackend, GpuSnapshot
from .backends import no_backend_error
from .owners import owner_of
from .quarantine import QuarantineStore

GiB = 1024**3


def report(
    backends: Mapping[str, GpuBackend],
    *,
    blocked: list[str] | None = None,
    proc: Path = Path("/proc"),
    quarantined: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON document of ``gpus --json``: backends, devices, and error/hint when none works.

    :param quarantined: UUID -> {"reason", "since"}, from the quarantine store.
    """
    rows, devices = [], []
    for name, backend in backends.items():
        error = backend.unavailable()
        if error is None:
            try:
                devices += [_device(snapshot, proc, quarantined or {}) for snapshot in backend.snapshot()]
            except Exception as err:  # the GpuError of a library that failed after its probe
                error = err
        rows.append(
            {
                "name": name,
                "available": error is None,
                "reason": None if error is None else getattr(error, "message", str(error)),
                "hint": getattr(error, "hint", None),
            }
        )
    none = no_backend_error(backends, blocked)
    return {
        "backends": rows,
        "devices": devices,
        "error": None if none is None else none.message,
        "hint": None if none is None else none.hint,
    }


def _device(device: GpuSnapshot, proc: Path, quarantined: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    deployments, foreign = [], []
    for process in device.processes or ():
        owner = owner_of(process.pid, proc)
        entry = {"pid": process.pid, "used_memory": process.used_memory, "command": owner.command}
        if owner.deployment is None:
            foreign.append(entry)
        else:
            deployments.append({"name": owner.deployment, **entry})
    health = device.health
    return {
        "backend": device.backend,
        "index": device.index,
        "uuid": device.uuid,
        "name": device.name,
        "vendor": device.vendor,
        "pci_bus_id": device.pci_bus_id,
        "memory": {"total": device.memory_total, "used": device.memory_used, "free": device.memory_free},
        "utilisation": device.utilisation,
        "temperature": device.temperature,
        "power": {"draw": device.power_draw, "limit": device.power_limit},
        "mig": {
            "enabled": device.mig_enabled,
            "instances": [
                {
                    "index": m.index,
                    "uuid": m.uuid,
                    "memory_total": m.memory_total,
                    "memory_used": m.memory_used,
                    "quarantined": m.uuid in quarantined,
                }
                for m in device.mig_instances
            ],
        },
        "health": {
            "ok": health.ok,
            "problems": health.problems,
            "ecc_uncorrected_volatile": health.ecc_uncorrected_volatile,
            "ecc_uncorrected_aggregate": health.ecc_uncorrected_aggregate,
            "retired_pages_pending": health.retired_pages_pending,
            "remapped_rows_pending": health.remapped_rows_pending,
            "remapping_failed": health.remapping_failed,
        },
        "quarantined": device.uuid in quarantined,
        "quarantine": dict(quarantined[device.uuid]) if device.uuid in quarantined else None,
        "processes_known": device.processes is not None,
        "deployments": deployments,
        "foreign": foreign,
    }


def print_report(doc: dict[str, Any], out: TextIO = sys.stdout) -> None:
    for backend in doc["backends"]:
        if not backend["available"]:
            reason = str(backend["reason"]).removeprefix(f"{backend['name']}: ")
            print(f"{backend['name']} unavailable: {reason}", file=out)
    for device in doc["devices"]:
        print(f"{device['backend']}:{device['index']}  {device['name'] or '?'}  {device['uuid'] or '?'}", file=out)
        print(f"  {_load_line(device)}", file=out)
        for problem in device["health"]["problems"]:
            print(f"  problem: {problem}", file=out)
        if device["quarantined"]:
            reason = device["quarantine"].get("reason") or "no reason recorded"
            print(f"  quarantined: {reason}; 'vllm-agent gpus --release {device['index']}' lifts it", file=out)
        for entry in device["deployments"]:
            print(f"  deployment {entry['name']}: pid {entry['pid']}{_memory(entry['used_memory'])}", file=out)
        for entry in device["foreign"]:
            print(f"  foreign: pid {entry['pid']} {entry['command']}{_memory(entry['used_memory'])}", file=out)
        if not device["processes_known"]:
            print("  processes: unknown (the driver does not list them)", file=out)
        for mig in device["mig"]["instances"]:
            mark = "  quarantined" if mig["quarantined"] else ""
            print(f"  MIG {mig['index']}: {mig['uuid']}{_memory(mig['memory_total'], 'total')}{mark}", file=out)


def _load_line(device: dict[str, Any]) -> str:
    memory, power = device["memory"], device["power"]
    used = "?" if memory["used"] is None else f"{memory['used'] / GiB:.1f}"
    parts = [f"memory {used}/{memory['total'] / GiB:.1f} GiB"]
    parts.append("util " + ("?" if device["utilisation"] is None else f"{device['utilisation']}%"))
    parts.append("?" if device["temperature"] is None else f"{device['temperature']} C")
    draw = "?" if power["draw"] is None else f"{power['draw']:.0f}"
    limit = "?" if power["limit"] is None else f"{power['limit']:.0f}"
    parts.append(f"{draw}/{limit} W")
    parts.append("health " + ("ok" if device["health"]["ok"] else "PROBLEM"))
    return "  ".join(parts)


def _memory(value: int | None, what: str = "") -> str:
    return "" if value is None else f", {value / GiB:.1f} GiB" + (f" {what}" if what else "")


def gpus(
    backends: Mapping[str, GpuBackend],
    *,
    as_json: bool,
    blocked: list[str] | None = None,
    state_dir: Path | None = None,
) -> int:
    """Exit 0 when a backend answered, 1 when none is available (the report still says why)."""
    quarantined = QuarantineStore(state_dir).all() if state_dir is not None else {}
    doc = report(backends, blocked=blocked, quarantined=quarantined)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        print_report(doc)
        if doc["error"]:
            print(f"error[gpu.error]: {doc['error']} hint: {doc['hint']}", file=sys.stderr)
    return 1 if doc["error"] else 0


def release(backends: Mapping[str, GpuBackend], state_dir: Path, device: str) -> int:
    """`gpus --release ID`: lift a quarantine. ID is a UUID (GPU or MIG), or a GPU's index."""
    store = QuarantineStore(state_dir)
    uuid = device
    if device.isdigit():
        matches = [d["uuid"] for d in report(backends)["devices"] if d["index"] == int(device)]
        if len(matches) != 1:
            raise GpuError(
                f"gpus --release: {'no' if not matches else 'more than one'} GPU with index {device} on this host",
                hint="name the device by its UUID ('vllm-agent gpus' lists them)",
            )
        uuid = matches[0]
    if not store.release(uuid):
        known = ", ".join(sorted(store.all())) or "none"
        raise GpuError(f"GPU {device} is not quarantined (quarantined: {known})", hint="'vllm-agent gpus' shows them")
    print(f"released GPU {device} ({uuid}): it takes new deployments again")
    return 0
