"""A wedged real engine (its VLLM::EngineCore SIGSTOPped: /health stays 200) is found and
restarted by the unit alone: the completion check for an idle engine, the metrics-stall check for
one stopped mid-generation (its gauges freeze, see the engine contract).

Both deployments start side by side and hang at once, so the tier pays for one start and one
restart of each, in parallel.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness.agent_cli import AgentCli
from harness.processes import descendants, wait_for
from harness.real_vllm import deployment_toml
from vllm_agent_plugins.health import MetricsStallCheck

START = 600  # seconds a real start may take on a loaded 2-core machine
INTERVAL, TIMEOUT, THRESHOLD = 2.0, 5.0, 2
HEALTH = f"[health]\ninterval = {INTERVAL}\ntimeout = {TIMEOUT}\nfailure_threshold = {THRESHOLD}\n"
# A round starts `interval` after the previous one ended, and a hung completion takes `timeout`:
# failure_threshold rounds, one more interval of phase, then systemd's stop and RestartSec. The
# margin covers the stop and a 2-core machine busy loading the other engine.
DETECT = THRESHOLD * (INTERVAL + TIMEOUT) + INTERVAL
MARGIN = 30.0
STALL_WINDOW = MetricsStallCheck().window  # the stall check's default window (not configurable)


def core_of(user_manager, name: str) -> int:  # noqa: ANN001
    launcher = int(user_manager.show(f"vllm@{name}.service", "MainPID")["MainPID"])

    def find() -> int | None:
        for pid in sorted(descendants(launcher)):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"VLLM::EngineCore"):
                    return pid
        return None

    return wait_for(f"{name}'s VLLM::EngineCore", find, timeout=30)


def passed(agent: AgentCli, name: str) -> set[str]:
    """The checks whose last run passed, from the deployment's state file."""
    saved = json.loads((agent.state_dir / "deployments" / f"{name}.json").read_text())
    return {record["name"] for record in saved.get("health", []) if record["ok"]}


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Pids this test SIGSTOPs: resumed and killed afterwards, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def stream_until_tokens(url: str, name: str, done: threading.Event) -> threading.Event:
    """A long streamed generation in a thread; the returned event is set once tokens flow."""
    flowing = threading.Event()
    body = {"model": name, "prompt": "a", "max_tokens": 200, "stream": True, "ignore_eos": True}

    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):
            with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=httpx.Timeout(10, read=None)) as r:
                chunks = 0
                for line in r.iter_lines():
                    chunks += line.startswith("data: ")
                    if chunks >= 2:
                        flowing.set()
                    if done.is_set():
                        return

    threading.Thread(target=run, daemon=True).start()
    return flowing


def test_a_wedged_engine_is_restarted_by_completion_and_by_metrics_stall(
    vllm_agent: AgentCli,
    tiny_model: Path,
    user_manager,
    stopped: list[int],  # noqa: ANN001
) -> None:
    vllm_agent.write_deployment("stuck", deployment_toml(tiny_model, extra=HEALTH + 'checks = ["completion"]\n'))
    # metrics-stall first; the completion check, deep, is due only every 600 s once it passed.
    stall_health = HEALTH + 'checks = ["metrics-stall", "completion"]\ndeep_interval = 600\n'
    vllm_agent.write_deployment("stalled", deployment_toml(tiny_model, extra=stall_health))
    for name in ("stuck", "stalled"):
        vllm_agent.ok("start", name, "--no-wait")
    rows = wait_for(
        "both ready",
        lambda: (
            (r := [vllm_agent.status(n) for n in ("stuck", "stalled")]) and all(x["state"] == "ready" for x in r) and r
        ),
        timeout=START,
        every=1,
    )
    before = {
        name: int(user_manager.show(f"vllm@{name}.service", "NRestarts")["NRestarts"]) for name in ("stuck", "stalled")
    }

    # The deep completion check must have passed once, or it stays due every round and fails
    # first: only then does "stalled" rely on metrics-stall alone.
    wait_for(
        "a passing health round of both checks",
        lambda: passed(vllm_agent, "stalled") >= {"metrics-stall", "completion"},
        timeout=60,
    )
    done = threading.Event()
    flowing = stream_until_tokens(rows[1]["url"], "stalled", done)
    assert flowing.wait(120), "the long generation never streamed"
    hung_at = time.monotonic()
    for name in ("stuck", "stalled"):
        pid = core_of(user_manager, name)
        stopped.append(pid)
        os.kill(pid, signal.SIGSTOP)

    bounds = {"stuck": DETECT + MARGIN, "stalled": STALL_WINDOW + DETECT + MARGIN}
    seen_watchdog: dict[str, bool] = {"stuck": False, "stalled": False}
    took: dict[str, float] = {}
    try:
        while len(took) < 2 and time.monotonic() - hung_at < max(bounds.values()) + 60:
            for name in set(bounds) - set(took):
                state = user_manager.show(f"vllm@{name}.service", "NRestarts", "Result")
                seen_watchdog[name] |= state["Result"] == "watchdog"
                if int(state["NRestarts"]) > before[name]:
                    took[name] = time.monotonic() - hung_at
            time.sleep(0.2)
    finally:
        done.set()
    for name, bound in bounds.items():
        assert name in took, f"{name} was not restarted within {max(bounds.values()) + 60:.0f}s"
        assert took[name] <= bound, f"{name} restarted after {took[name]:.1f}s, more than {bound:.0f}s"
    assert seen_watchdog["stuck"] and seen_watchdog["stalled"], seen_watchdog
    assert '"check": "completion"' in vllm_agent.log("stuck")
    assert '"check": "metrics-stall"' in vllm_agent.log("stalled")
