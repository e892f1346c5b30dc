"""Desired state: the record, its mirror in unit enablement, and what status says from it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from vllm_agent.config.desired import RUNNING, STOPPED, DesiredStates
from vllm_agent.config.schema import Deployment
from vllm_agent.deployments.state import DeploymentState
from vllm_agent.deployments.status import classify
from vllm_agent.deployments.statusline import exit_status
from vllm_agent.systemd.model import UnitState


@pytest.fixture
def desired(tmp_path: Path) -> DesiredStates:
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "vllm@.service").write_text("[Service]\n")
    return DesiredStates(tmp_path / "state", tmp_path / "units", user=False)


def _link(desired: DesiredStates, name: str) -> Path:
    return desired.unit_dir / "multi-user.target.wants" / f"vllm@{name}.service"


def test_a_deployment_nobody_decided_on_is_wanted_running(desired: DesiredStates) -> None:
    assert desired.get("new") == RUNNING


def test_stop_and_start_are_recorded_and_mirrored_into_enablement(desired: DesiredStates) -> None:
    desired.set("llama", RUNNING)
    assert _link(desired, "llama").is_symlink()
    assert _link(desired, "llama").readlink() == desired.unit_dir / "vllm@.service"
    desired.set("llama", STOPPED)
    assert desired.get("llama") == STOPPED
    assert not _link(desired, "llama").exists()
    assert DesiredStates(desired.state_dir, desired.unit_dir, user=False).get("llama") == STOPPED  # on disk


def test_user_scope_enables_into_default_target(tmp_path: Path) -> None:
    desired = DesiredStates(tmp_path / "state", tmp_path / "units", user=True)
    desired.set("llama", RUNNING)
    assert (tmp_path / "units" / "default.target.wants" / "vllm@llama.service").is_symlink()


def test_sync_repairs_a_link_an_operator_removed_and_forget_removes_both(desired: DesiredStates) -> None:
    desired.set("llama", RUNNING)
    _link(desired, "llama").unlink()
    assert desired.sync_enablement("llama") is True
    assert _link(desired, "llama").is_symlink()
    assert desired.sync_enablement("llama") is False  # nothing to do
    desired.forget("llama")
    assert not desired.path("llama").exists() and not _link(desired, "llama").exists()


def test_a_stop_recorded_by_an_older_version_is_kept(desired: DesiredStates) -> None:
    old = desired.state_dir / "deployments" / "llama.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"name": "llama", "phase": "stopped", "wanted": False}))
    assert desired.get("llama") == STOPPED


def test_an_unreadable_record_is_taken_as_running(desired: DesiredStates) -> None:
    desired.path("llama").parent.mkdir(parents=True)
    desired.path("llama").write_bytes(b"\xff\xfe garbage")
    assert desired.get("llama") == RUNNING


def _unit(active: str = "inactive", sub: str = "dead") -> UnitState:
    return replace(UnitState.not_found("vllm@llama.service"), load_state="loaded", active_state=active, sub_state=sub)


DEPLOYMENT = Deployment(name="llama", model="org/model", port=8001)


@pytest.mark.parametrize(
    ("saved", "reason"),
    [
        (
            DeploymentState(name="llama", phase="serving", started_at=1.0),
            "wanted, not running since boot: it was serving when its host went down",
        ),
        (
            DeploymentState(name="llama", phase="loading", started_at=1.0),
            "wanted, not running since boot: it was loading when its host went down",
        ),
        (
            DeploymentState(name="llama", phase="failed", reason="model not found", started_at=1.0),
            "wanted, not running: model not found",
        ),
        (
            DeploymentState(name="llama", phase="stopped", started_at=1.0),
            "wanted, not running: stopped outside vllm-agent (systemctl stop?)",
        ),
        (DeploymentState(name="llama"), "wanted, not started yet"),
    ],
)
def test_wanted_but_inactive_says_why_and_needs_an_operator(saved: DeploymentState, reason: str) -> None:
    status = classify(DEPLOYMENT, _unit(), saved, desired=RUNNING)
    assert (status.state, status.desired, status.reason) == ("stopped", "running", reason)
    assert "vllm-agent start llama" in status.hint
    assert exit_status([status.as_json()]) == 3


def test_stopped_on_purpose_is_quiet_whatever_phase_was_left() -> None:
    status = classify(DEPLOYMENT, _unit(), DeploymentState(name="llama", phase="serving"), desired=STOPPED)
    assert (status.state, status.desired, status.reason) == ("stopped", "stopped", "")
    assert exit_status([status.as_json()]) == 0


def test_a_wanted_unit_that_is_stopping_is_restarting_and_an_unwanted_one_is_stopping() -> None:
    # A restart passes through deactivating: clients (the gateway) must hear "starting", so they
    # get a Retry-After; a stop on purpose is quietly "stopped".
    saved = DeploymentState(name="llama", phase="serving")
    wanted = classify(DEPLOYMENT, _unit("deactivating", "stop-sigterm"), saved, desired=RUNNING)
    assert (wanted.state, wanted.reason) == ("starting", "restarting: the engine is stopping")
    unwanted = classify(DEPLOYMENT, _unit("deactivating", "stop-sigterm"), saved, desired=STOPPED)
    assert (unwanted.state, unwanted.reason) == ("stopped", "stopping")


def test_an_ipv6_host_is_bracketed_in_the_url() -> None:
    v6 = Deployment(name="llama", model="org/model", port=8001, host="::1")
    assert classify(v6, _unit("active", "running"), DeploymentState(name="llama")).url == "http://[::1]:8001"


def test_an_older_stop_is_adopted_and_survives_the_state_files_rewrite(desired: DesiredStates) -> None:
    old = desired.state_dir / "deployments" / "llama.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"name": "llama", "phase": "stopped", "wanted": False}))
    assert desired.get("llama") == STOPPED
    old.write_text(json.dumps({"name": "llama", "phase": "failed"}))  # rewritten without the old key
    assert desired.get("llama") == STOPPED
