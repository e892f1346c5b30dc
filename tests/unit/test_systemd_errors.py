"""sdbus errors become AgentErrors an operator can act on, and nothing of sdbus gets out."""

from __future__ import annotations

import pytest
from sdbus import (
    DbusAccessDeniedError,
    DbusInteractiveAuthorizationRequiredError,
    DbusInvalidArgsError,
    DbusNoReplyError,
    DbusServiceUnknownError,
    SdBusBaseError,
    SdBusLibraryError,
    SdBusUnmappedMessageError,
)
from sdbus.sd_bus_internals import DBUS_ERROR_TO_EXCEPTION
from vllm_agent.errors import AccessDenied, AgentError, SystemdError, SystemdUnavailable, UnitNotFound
from vllm_agent.systemd import errors
from vllm_agent.systemd.errors import (
    LoadFailedError,
    NoSuchUnitError,
    UnitMaskedError,
    agent_error,
)

SYSTEMD_ERRORS = [
    errors.NoSuchUnitError,
    errors.NoSuchJobError,
    errors.LoadFailedError,
    errors.UnitMaskedError,
    errors.JobTypeNotApplicableError,
    errors.OnlyByDependencyError,
    errors.TransactionIsDestructiveError,
    errors.AlreadySubscribedError,
    errors.ShuttingDownError,
]


@pytest.mark.parametrize("error_class", SYSTEMD_ERRORS, ids=lambda c: c.dbus_error_name)
def test_systemd_error_names_arrive_as_their_own_classes(error_class: type) -> None:
    assert DBUS_ERROR_TO_EXCEPTION[error_class.dbus_error_name] is error_class


@pytest.mark.parametrize("error_class", [NoSuchUnitError, LoadFailedError])
def test_a_missing_unit_names_the_unit_and_how_to_check_its_file(error_class: type) -> None:
    converted = agent_error(
        error_class("Unit vllm@x.service not found."), action="start", unit="vllm@x.service", user=True
    )

    assert type(converted) is UnitNotFound
    assert converted.message.startswith("start vllm@x.service: Unit vllm@x.service not found.")
    assert error_class.dbus_error_name in converted.message
    assert "systemctl --user cat vllm@x.service" in converted.hint
    assert "daemon-reload" in converted.hint


def test_the_system_manager_hints_use_plain_systemctl() -> None:
    converted = agent_error(NoSuchUnitError("gone"), action="stop", unit="a.service", user=False)

    assert "'systemctl cat a.service'" in converted.hint


@pytest.mark.parametrize("error_class", [DbusAccessDeniedError, DbusInteractiveAuthorizationRequiredError])
def test_a_refusal_is_access_denied_with_a_polkit_hint(error_class: type) -> None:
    converted = agent_error(error_class("not allowed"), action="start", unit="vllm@x.service")

    assert type(converted) is AccessDenied
    assert "not allowed" in converted.message
    assert "polkit" in converted.hint


def test_a_masked_unit_says_how_to_unmask_it() -> None:
    converted = agent_error(UnitMaskedError("Unit a.service is masked."), action="start", unit="a.service", user=True)

    assert type(converted) is SystemdError
    assert "masked" in converted.message
    assert converted.hint == "systemctl --user unmask a.service"


def test_an_unreachable_user_bus_names_the_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    library_error = SdBusLibraryError("sd_bus_open_user() in function x returned error number: 2")

    converted = agent_error(library_error, action="connecting to systemd", user=True)

    assert type(converted) is SystemdUnavailable
    assert "No such file or directory (ENOENT)" in converted.message
    assert "XDG_RUNTIME_DIR=/run/user/4242" in converted.hint


@pytest.mark.parametrize("error", [DbusNoReplyError("Connection terminated"), DbusServiceUnknownError("no systemd1")])
def test_a_lost_or_absent_manager_is_unavailable(error: SdBusBaseError) -> None:
    converted = agent_error(error, action="stop", unit="a.service", user=False)

    assert type(converted) is SystemdUnavailable
    assert "systemctl status dbus.service" in converted.hint


def test_an_unknown_systemd_error_keeps_its_name_and_message() -> None:
    unmapped = SdBusUnmappedMessageError("org.freedesktop.systemd1.SomethingNew", "it broke")

    converted = agent_error(unmapped, action="restart", unit="a.service")

    assert type(converted) is SystemdError
    assert converted.message == "restart a.service: it broke (org.freedesktop.systemd1.SomethingNew)"


def test_invalid_arguments_are_a_systemd_error() -> None:
    converted = agent_error(DbusInvalidArgsError("Unit name x is not valid."), action="start", unit="x")

    assert type(converted) is SystemdError
    assert "Unit name x is not valid." in converted.message


@pytest.mark.parametrize(
    "error",
    [
        NoSuchUnitError("x"),
        DbusAccessDeniedError("x"),
        SdBusLibraryError("returned error number: 111"),
        SdBusUnmappedMessageError("a.b.C", "x"),
    ],
)
def test_no_sdbus_type_leaks_out(error: SdBusBaseError) -> None:
    converted = agent_error(error, action="start", unit="a.service")

    assert isinstance(converted, AgentError)
    assert not isinstance(converted, SdBusBaseError)
    assert converted.__cause__ is None
    assert converted.one_line().startswith("error[systemd.")
