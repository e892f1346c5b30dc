"""sd_notify: tell systemd about readiness, status lines, timeouts and the watchdog."""

from __future__ import annotations

import os
import re
import socket

from ..render.escape import notify_text

_FIELD = re.compile(r"[A-Z_]+")
STATUS_LIMIT = 400  # characters of STATUS=: `systemctl status` shows one line


class Notifier:
    """Speaks the sd_notify protocol on $NOTIFY_SOCKET; silent when not run by systemd."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self._address = address or None
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self._address else None
        self.last_status = ""

    @property
    def watchdog_usec(self) -> int:
        """WatchdogSec as systemd passed it to us (0: no watchdog)."""
        if os.environ.get("WATCHDOG_PID") not in (None, str(os.getpid())):
            return 0
        return int(os.environ.get("WATCHDOG_USEC", "0") or 0)

    def send(self, **fields: str | int) -> None:
        """One datagram of ``KEY=value`` lines. Every value is made one printable line, so no
        text (the engine's included) can add a field such as READY=1 or MAINPID=."""
        lines = []
        for key, value in fields.items():
            name = key.upper()
            if not _FIELD.fullmatch(name):
                raise ValueError(f"not an sd_notify field name: {key!r}")
            text = notify_text(str(value), STATUS_LIMIT if name == "STATUS" else 100)
            if name == "STATUS":
                self.last_status = text
            lines.append(f"{name}={text}")
        message = "\n".join(lines)
        if self._socket is not None and self._address is not None:
            try:
                # Never block: a manager slow to read its queue must not stall our event loop
                # (a lost status line is better than a missed watchdog of our own).
                self._socket.sendto(message.encode(), socket.MSG_DONTWAIT, self._address)
            except OSError:
                pass  # systemd went away or its queue is full; nothing useful to do from here

    def status(self, text: str) -> None:
        self.send(status=text)

    def ready(self, text: str) -> None:
        self.send(ready=1, status=text)

    def extend_timeout(self, seconds: float) -> None:
        self.send(extend_timeout_usec=int(seconds * 1_000_000))

    def watchdog(self) -> None:
        self.send(watchdog=1)

    def watchdog_trigger(self, text: str) -> None:
        """Ask systemd to treat us as hung now: restart with Result=watchdog."""
        self.send(status=text, watchdog="trigger")

    def stopping(self, text: str) -> None:
        self.send(stopping=1, status=text)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
