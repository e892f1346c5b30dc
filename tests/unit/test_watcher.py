"""Unit changes become transitions with reasons, recorded and sent to the agent_event hook."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vllm_agent import hookimpl
from vllm_agent.config.schema import AgentSettings
from vllm_agent.daemon.history import History
from vllm_agent.daemon.watch import Watcher, transitions
from vllm_agent.deployments.state import StateStore
from vllm_agent.log import get_logger
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.systemd.model import UnitEvent, UnitState

READY = replace(
    UnitState.not_found("vllm@a.service"),
    load_state="loaded",
    active_state="active",
    sub_state="running",
    main_pid=10,
    invocation_id="aa",
    status_text="serving a on http://x",
)


class Alerts:
    def __init__(self) -> None:
        self.events = []

    @hookimpl
    def agent_event(self, event) -> None:  # noqa: ANN001
        self.events.append(event)


def test_a_crash_and_restart_is_one_restarted_transition_with_the_launchers_reason() -> None:
    after = replace(READY, n_restarts=1, main_pid=11, invocation_id="bb")
    changes = transitions(READY, after, "the engine exited with signal 9 after it was ready", False)
    assert [(c.kind, c.reason) for c in changes] == [
        ("restarted", "restart 1: the engine exited with signal 9 after it was ready")
    ]


def test_the_restart_is_recorded_when_systemd_schedules_it_and_only_once() -> None:
    waiting = replace(READY, active_state="activating", sub_state="auto-restart", main_pid=0)
    again = replace(READY, active_state="activating", sub_state="start", n_restarts=1, invocation_id="bb")
    assert [c.kind for c in transitions(READY, waiting, "engine died", False)] == ["restarted"]
    assert [c.kind for c in transitions(waiting, again, "engine died", False)] == []


def test_failing_for_good_is_failed_or_crash_loop() -> None:
    failed = replace(READY, active_state="failed", sub_state="failed", result="exit-code", exec_main_status=78)
    assert [c.kind for c in transitions(READY, failed, "port taken", False)] == ["failed"]
    assert [c.kind for c in transitions(READY, failed, "crash-loop: 3 starts", True)] == ["crash-loop"]


def test_unhealthy_status_line_is_a_transition_and_first_sight_is_not() -> None:
    unhealthy = replace(READY, status_text="unhealthy: completion: no answer within 5s; restarting")
    assert [c.kind for c in transitions(READY, unhealthy, "", False)] == ["unhealthy"]
    assert transitions(None, READY, "", False) == []


def test_watcher_records_history_and_calls_the_event_hook(tmp_path: Path) -> None:
    alerts = Alerts()
    plugins = make_plugin_manager(AgentSettings(), extra=[("alerts", alerts)])
    history = History(tmp_path)
    watcher = Watcher(StateStore(tmp_path), history, plugins, get_logger())
    watcher.attach([READY])
    crashed = replace(READY, n_restarts=1, invocation_id="bb")
    watcher.handle(UnitEvent(kind="resync", unit="vllm@a.service", state=crashed))
    assert [(e.deployment, e.kind) for e in alerts.events] == [("a", "restarted")]
    assert "noticed after reconnecting to systemd" in alerts.events[0].reason
    # A new daemon reads the same history back.
    assert [t.kind for t in History(tmp_path).last("a")] == ["restarted"]


def test_other_units_are_ignored(tmp_path: Path) -> None:
    watcher = Watcher(StateStore(tmp_path), History(tmp_path), make_plugin_manager(AgentSettings()), get_logger())
    assert watcher.handle(UnitEvent(kind="changed", unit="sshd.service", state=READY)) == []
