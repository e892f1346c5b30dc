"""Desired state: whether the operator wants a deployment running. The one place that decides it.

`deploy`, `start` and `restart` want it running, `stop` (and `deploy --no-start`) stopped,
`remove` forgets it. A deployment file nobody has decided on yet is wanted running: dropping a
file into models.d/ is how a deployment is declared. The daemon converges on this, never on the
last phase a launcher recorded, and `status` shows it.

The record lives in the state directory; the same decision is mirrored into systemd as the
unit's enablement (a link in the scope's target .wants/ directory, as `systemctl enable` makes
it), so wanted units come back at boot with no daemon at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from ..fsutil import remove_if_exists, symlink_atomic, write_atomic
from ..log import get_logger
from .names import UNIT_TEMPLATE, unit_name

Desired = Literal["running", "stopped"]
RUNNING: Desired = "running"
STOPPED: Desired = "stopped"


def boot_target(user: bool) -> str:
    """What the template's [Install] WantedBy= names in this scope."""
    return "default.target" if user else "multi-user.target"


class DesiredStates:
    def __init__(self, state_dir: Path, unit_dir: Path, *, user: bool) -> None:
        self.directory = state_dir / "desired"
        self.state_dir = state_dir
        self.unit_dir = unit_dir
        self.user = user

    def path(self, name: str) -> Path:
        return self.directory / name

    def get(self, name: str) -> Desired:
        try:
            text = self.path(name).read_text().strip()
        except FileNotFoundError:
            return self._adopt_older_record(name)
        except (OSError, UnicodeDecodeError) as err:
            get_logger().warning("desired state unreadable; taking 'running'", deployment=name, error=str(err))
            return RUNNING
        if text not in (RUNNING, STOPPED):
            get_logger().warning("desired state unreadable; taking 'running'", deployment=name, found=text[:40])
            return RUNNING
        return text  # type: ignore[return-value]

    def set(self, name: str, desired: Desired) -> None:
        """Record the decision, then make the unit's enablement agree with it."""
        if self._recorded(name) != desired:
            write_atomic(self.path(name), desired + "\n")
        self.sync_enablement(name, desired)

    def forget(self, name: str) -> None:
        remove_if_exists(self.path(name))
        self.sync_enablement(name, STOPPED)

    def sync_enablement(self, name: str, desired: Desired | None = None) -> bool:
        """Enable the instance when wanted, disable it when not; True when a link changed."""
        link = self.unit_dir / f"{boot_target(self.user)}.wants" / unit_name(name)
        want = (desired or self.get(name)) == RUNNING
        if want == link.is_symlink():
            return False
        if want:
            symlink_atomic(link, self._template())
        else:
            remove_if_exists(link)
        return True

    def _recorded(self, name: str) -> str | None:
        try:
            return self.path(name).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def _template(self) -> Path:
        """The template the link points at, as `systemctl enable` would make it."""
        scope = "user" if self.user else "system"
        for directory in (self.unit_dir, Path(f"/etc/systemd/{scope}"), Path(f"/usr/lib/systemd/{scope}")):
            if (directory / UNIT_TEMPLATE).exists():
                return directory / UNIT_TEMPLATE
        return self.unit_dir / UNIT_TEMPLATE

    def _adopt_older_record(self, name: str) -> Desired:
        """Before this record existed, `stop` wrote "wanted": false into the state file. Keep
        that decision here, where it survives the state file's next rewrite."""
        try:
            data = json.loads((self.state_dir / "deployments" / f"{name}.json").read_text())
        except (OSError, ValueError):
            return RUNNING
        if not (isinstance(data, dict) and data.get("wanted") is False):
            return RUNNING
        try:
            write_atomic(self.path(name), STOPPED + "\n")
        except OSError:
            pass  # a reader without write access (status as another user): decided again next time
        return STOPPED
