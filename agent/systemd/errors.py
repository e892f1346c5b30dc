"""systemd's D-Bus error names as sdbus exception classes, and their translation into AgentErrors.

Declaring a class with ``dbus_error_name`` registers it with sdbus, so the error arrives as that
class instead of SdBusUnmappedMessageError. ``agent_error()`` is the one place where sdbus
errors become the agent's own; nothing outside agent/systemd/ sees an sdbus type.
"""

from __future__ import annotations

import errno
import os
import re

from sdbus import (
    DbusAccessDeniedError,
    DbusDisconnectedError,
    DbusFailedError,
    DbusInteractiveAuthorizationRequiredError,
    DbusNameHasNoOwnerError,
    DbusNoReplyError,
    DbusNoServerError,
    DbusServiceUnknownError,
    DbusTimeoutError,
    SdBusBaseError,
    SdBusLibraryError,
    SdBusUnmappedMessageError,
)

from ..errors import AccessDenied, SystemdError, SystemdUnavailable, UnitNotFound


class NoSuchUnitError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.NoSuchUnit"


class NoSuchJobError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.NoSuchJob"


class LoadFailedError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.LoadFailed"


class UnitMaskedError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.UnitMasked"


class JobTypeNotApplicableError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.JobTypeNotApplicable"


class OnlyByDependencyError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.OnlyByDependency"


class TransactionIsDestructiveError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.TransactionIsDestructive"


class AlreadySubscribedError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.AlreadySubscribed"


class ShuttingDownError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.ShuttingDown"


# Errors that mean "systemd is not reachable (any more)", not "systemd refused".
_CONNECTION_ERRORS = (
    SdBusLibraryError,
    DbusDisconnectedError,
    DbusNoReplyError,
    DbusNoServerError,
    DbusServiceUnknownError,
    DbusNameHasNoOwnerError,
    DbusTimeoutError,
    ShuttingDownError,
)
_ERRNO_RE = re.compile(r"error number: (\d+)")


def systemctl(user: bool) -> str:
    return "systemctl --user" if user else "systemctl"


def unreachable_hint(user: bool) -> str:
    if user:
        runtime = os.environ.get("XDG_RUNTIME_DIR", "(unset)")
        return (
            f"is the user manager running? XDG_RUNTIME_DIR={runtime}, its bus is "
            "$XDG_RUNTIME_DIR/bus (from dbus-user-session); without a login session, "
            "'loginctl enable-linger USER' keeps a user manager running"
        )
    return "is systemd PID 1 and is dbus running? try 'systemctl status dbus.service'"


def is_connection_error(error: SdBusBaseError) -> bool:
    return isinstance(error, _CONNECTION_ERRORS)


def describe(error: SdBusBaseError) -> str:
    """A one-line description with the D-Bus error name or the errno, for operators."""
    if isinstance(error, SdBusUnmappedMessageError) and len(error.args) == 2:
        name, message = error.args
        return f"{message} ({name})"
    if isinstance(error, DbusFailedError):
        message = error.args[0] if error.args else ""
        return f"{message} ({error.dbus_error_name})"
    if isinstance(error, SdBusLibraryError):
        found = _ERRNO_RE.search(str(error))
        if found:
            number = int(found.group(1))
            return f"{os.strerror(number)} ({errno.errorcode.get(number, number)})"
    return str(error)


def agent_error(error: SdBusBaseError, *, action: str, unit: str | None = None, user: bool = False) -> SystemdError:
    """The AgentError that tells an operator what ``action`` on ``unit`` ran into."""
    what = f"{action} {unit}" if unit else action
    why = describe(error)
    if is_connection_error(error):
        return SystemdUnavailable(f"{what}: systemd is not reachable: {why}", hint=unreachable_hint(user))
    if isinstance(error, (DbusAccessDeniedError, DbusInteractiveAuthorizationRequiredError)):
        return AccessDenied(
            f"{what}: access denied: {why}",
            hint="run as the agent's user, or allow org.freedesktop.systemd1.manage-units "
            "for vllm@*.service in a polkit rule",
        )
    if isinstance(error, (NoSuchUnitError, LoadFailedError)):
        shown = unit or "the unit"
        return UnitNotFound(
            f"{what}: {why}",
            hint=f"is its unit file installed? '{systemctl(user)} cat {shown}' shows it; "
            f"run '{systemctl(user)} daemon-reload' after writing unit files",
        )
    if isinstance(error, UnitMaskedError):
        return SystemdError(f"{what}: the unit is masked: {why}", hint=f"{systemctl(user)} unmask {unit}")
    return SystemdError(f"{what}: {why}")
