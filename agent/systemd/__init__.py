"""systemd over D-Bus: the only package that imports sdbus.

Code above it sees the UnitManager Protocol and its value types (model.py) and AgentErrors;
``connect()`` returns the real client.
"""

from .client import SystemdClient, UnitWatch, connect
from .model import (
    CLD_DUMPED,
    CLD_EXITED,
    CLD_KILLED,
    DEFAULT_PATTERNS,
    UnitEvent,
    UnitManager,
    UnitState,
    check_unit_name,
)

__all__ = [
    "CLD_DUMPED",
    "CLD_EXITED",
    "CLD_KILLED",
    "DEFAULT_PATTERNS",
    "SystemdClient",
    "UnitEvent",
    "UnitManager",
    "UnitState",
    "UnitWatch",
    "check_unit_name",
    "connect",
]
