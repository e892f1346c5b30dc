"""The placement record (STATE_DIR/placement.json): each deployment's devices and the
gpu_memory_utilization its engine was started with. Read by `status` without the placer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config.schema import Deployment
from ..fsutil import write_atomic
from ..jsonfiles import Trouble, read_json_object
from .slots import Slot, utilisation

FILE = "placement.json"
_TROUBLE = Trouble("placement")


class PlacementRecords:
    """deployment -> {"utilisation": float, "explicit": bool, "devices": [Slot records]}."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE

    def load(self) -> dict[str, dict[str, Any]]:
        return read_json_object(self.path, _TROUBLE)

    def all(self) -> dict[str, list[Slot]]:
        return {name: [Slot.from_record(d) for d in entry.get("devices", [])] for name, entry in self.load().items()}

    def get(self, name: str) -> list[Slot] | None:
        entry = self.load().get(name)
        return None if entry is None else [Slot.from_record(d) for d in entry.get("devices", [])]

    def set(self, deployment: Deployment, slots: Sequence[Slot]) -> None:
        data = self.load()
        entry = {
            "utilisation": utilisation(deployment.gpu_memory_utilization),
            "explicit": isinstance(deployment.gpus, list),
            "devices": [slot.record() for slot in slots],
        }
        if data.get(deployment.name) != entry:
            data[deployment.name] = entry
            write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def forget(self, name: str) -> None:
        data = self.load()
        if data.pop(name, None) is not None:
            write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
