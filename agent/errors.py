"""Errors an operator can act on.

An AgentError is an expected failure: the CLI prints it as one line (``error[code]: message
hint: ...``) without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import ClassVar


class AgentError(Exception):
    """An expected failure an operator can act on; logged as one line, without traceback."""

    code: ClassVar[str] = "agent.error"
    exit_code: ClassVar[int] = 1
    # Found before the engine runs, most failures would meet a restart again (exit 78, no
    # restart); a transient one (the network, a Hub outage) is worth systemd's next restart.
    transient: ClassVar[bool] = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        line = f"error[{self.code}]: {self.message}"
        return f"{line} hint: {self.hint}" if self.hint else line


class ConfigError(AgentError):
    """One or more problems in the configuration directory; each names file and key."""

    code = "config.invalid"
    exit_code = 2

    def __init__(self, problems: list[str], *, hint: str | None = None) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems), hint=hint)

    def one_line(self) -> str:
        return "\n".join(f"error[{self.code}]: {p}" for p in self.problems) + (
            f"\nhint: {self.hint}" if self.hint else ""
        )


class InvalidName(AgentError):
    code = "deployment.invalid_name"
    exit_code = 2


class InvalidModelId(AgentError):
    code = "model.invalid_id"
    exit_code = 2


class DeploymentNotFound(AgentError):
    code = "deployment.not_found"


class DeploymentExists(AgentError):
    code = "deployment.exists"


class ModelNotFound(AgentError):
    code = "model.not_found"


class ModelSourceError(AgentError):
    code = "model.source_failed"


class ModelSourceUnavailable(ModelSourceError):
    """The network or the model's server failed; a restart retries (and resumes a download)."""

    code = "model.source_unavailable"
    transient = True


class PortUnavailable(AgentError):
    code = "port.unavailable"


class NoFreePort(AgentError):
    code = "port.range_exhausted"


class PluginError(AgentError):
    code = "plugin.error"


class GpuError(AgentError):
    code = "gpu.error"


class SystemdError(AgentError):
    code = "systemd.error"


class SystemdUnavailable(SystemdError):
    code = "systemd.unavailable"


class UnitNotFound(SystemdError):
    code = "systemd.no_such_unit"


class AccessDenied(SystemdError):
    code = "systemd.access_denied"


class StartFailed(AgentError):
    code = "deployment.start_failed"


class DaemonUnavailable(AgentError):
    code = "daemon.unavailable"


class DaemonRunning(AgentError):
    code = "daemon.already_running"


class InvalidUnitName(SystemdError):
    code = "systemd.invalid_unit_name"
    exit_code = 2


class SystemdClientClosed(SystemdError):
    code = "systemd.client_closed"
