"""`vllm-agent logs`: the agent's JSON lines rendered for a person, the engine's as they came."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from vllm_agent.cli.logs import BadSince, parse_since, render

AGENT = [sys.executable, "-m", "vllm_agent"]
READY = {
    "deployment": "x",
    "url": "http://127.0.0.1:8000",
    "seconds": 0.94,
    "event": "ready",
    "level": "info",
    "timestamp": "2026-11-30T07:22:47.222519Z",
}
DIED = {
    "deployment": "x",
    "status": 1,
    "event": "engine died",
    "level": "error",
    "reason": "CUDA out of memory",
    "timestamp": "2026-11-30T09:00:00.000001Z",
}
ENGINE = "INFO:     Application startup complete."


def test_an_agent_line_reads_as_time_level_deployment_event_fields() -> None:
    line = "<6>" + json.dumps(READY)
    assert render(line) == "2026-11-30 07:22:47 INFO    [x] ready  url=http://127.0.0.1:8000 seconds=0.94"
    assert render(json.dumps(DIED)) == (
        '2026-11-30 09:00:00 ERROR   [x] engine died  status=1 reason="CUDA out of memory"'
    )


def test_engine_output_and_json_that_is_not_the_agents_pass_through() -> None:
    assert render(ENGINE + "\n") == ENGINE
    assert render('{"not": "an agent line"}') == '{"not": "an agent line"}'
    assert render("{broken") == "{broken"


def test_since_takes_a_time_or_an_age_and_names_the_problem_otherwise() -> None:
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert parse_since("10m", now=now) == datetime(2026, 11, 30, 8, 50, tzinfo=UTC)
    assert parse_since("2 h ago", now=now) == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    assert parse_since("2026-11-30 08:15", now=now) == datetime(2026, 11, 30, 8, 15, tzinfo=UTC)
    with pytest.raises(BadSince, match="--since 'yesterday-ish'"):
        parse_since("yesterday-ish", now=now)


@pytest.fixture
def log_dir_config(tmp_path: Path) -> Path:
    """A config whose units write to log_dir (no journald), with one deployment's log."""
    config = tmp_path / "conf"
    (config / "models.d").mkdir(parents=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    (config / "agent.toml").write_text(f'log_dir = "{logs}"\nstate_dir = "{tmp_path / "state"}"\n')
    (config / "models.d" / "x.toml").write_text('model = "/srv/models/tiny"\nport = 8000\n')
    (logs / "x.log").write_text("<6>" + json.dumps(READY) + "\n" + ENGINE + "\n" + "<3>" + json.dumps(DIED) + "\n")
    return config


def logs(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, "--user", "--config-dir", str(config), "logs", "x", *args], capture_output=True, text=True, timeout=60
    )


def test_the_files_fallback_renders_keeps_raw_json_on_request_and_filters_by_time(log_dir_config: Path) -> None:
    shown = logs(log_dir_config)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "2026-11-30 07:22:47 INFO    [x] ready  url=http://127.0.0.1:8000 seconds=0.94",
        ENGINE,
        '2026-11-30 09:00:00 ERROR   [x] engine died  status=1 reason="CUDA out of memory"',
    ]
    raw = logs(log_dir_config, "--json").stdout.splitlines()
    assert json.loads(raw[0].removeprefix("<6>")) == READY and raw[1] == ENGINE
    later = logs(log_dir_config, "--since", "2026-11-30 08:00").stdout.splitlines()
    assert later == ['2026-11-30 09:00:00 ERROR   [x] engine died  status=1 reason="CUDA out of memory"']
    bad = logs(log_dir_config, "--since", "soonish")
    assert bad.returncode == 2 and bad.stderr.startswith("error[logs.bad_since]: --since 'soonish'")
