"""The device nodes an engine needs for its devices, for units that sandbox /dev.

Only where the unit is sandboxed (DevicePolicy=closed or strict, from a plugin's directives or
an operator's drop-in) does the agent grant nodes: then exactly those of the pinned devices plus
the vendor's control nodes. Without a sandbox systemd allows every node, and so does the agent.
The GPU's node is found from its PCI address, as the drivers publish it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .slots import Slot

NVIDIA_CONTROL = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
_MINOR = re.compile(r"^Device Minor:\s*(\d+)", re.MULTILINE)


def sandboxed(directives: Mapping[str, Sequence[str]]) -> bool:
    """True when the unit's own lines close /dev to what DeviceAllow= lists."""
    lines = [line.replace(" ", "") for line in directives.get("Service", [])]
    return any(line in ("DevicePolicy=closed", "DevicePolicy=strict") for line in lines)


def device_allow(slots: Sequence[Slot], *, proc: Path = Path("/proc"), sys: Path = Path("/sys")) -> list[str]:
    """DeviceAllow= values for ``slots``: the vendor's control nodes and each device's own."""
    allowed: list[str] = []
    for slot in slots:
        if slot.vendor == "amd":
            allowed.append("/dev/kfd rw")
            allowed += [f"/dev/dri/{node} rw" for node in _render_nodes(slot, sys)]
        else:
            allowed += [f"{node} rw" for node in NVIDIA_CONTROL]
            minor = _nvidia_minor(slot, proc)
            if minor is not None:
                allowed.append(f"/dev/nvidia{minor} rw")
            if slot.mig is not None:
                allowed.append("char-nvidia-caps r")  # MIG access goes through capability nodes
    return list(dict.fromkeys(allowed))


def _nvidia_minor(slot: Slot, proc: Path) -> int | None:
    bus = (slot.pci_bus_id or "").lower()
    if not bus:
        return None
    # NVML gives an 8-digit domain ("00000000:3b:00.0"); the driver's directory a 4-digit one.
    short = bus[4:] if len(bus.split(":", 1)[0]) == 8 else bus
    try:
        text = (proc / "driver" / "nvidia" / "gpus" / short / "information").read_text()
    except OSError:
        return None
    match = _MINOR.search(text)
    return int(match.group(1)) if match else None


def _render_nodes(slot: Slot, sys: Path) -> list[str]:
    bus = (slot.pci_bus_id or "").lower()
    if not bus:
        return []
    directory = sys / "bus" / "pci" / "devices" / bus / "drm"
    try:
        return sorted(entry.name for entry in directory.iterdir() if entry.name.startswith(("renderD", "card")))
    except OSError:
        return []
