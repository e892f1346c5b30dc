"""The hf source under the real user manager: a download slower than the unit's start timeout
completes (the launcher extends it while bytes arrive) with `systemctl status` showing the
download; the engine gets the absolute snapshot and HF_HUB_OFFLINE=1; a restart with the Hub gone
starts from the cache; a stalled download fails with its reason and systemd's restart resumes it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.fake_hub import FakeHub, FakeRepo, model_files
from harness.agent_cli import AgentCli
from harness.processes import descendants, wait_for

REPO = "acme/slow-llama"
WEIGHTS = 20 * 1024 * 1024
STALL = 5  # [startup] stall_timeout: the unit's TimeoutStartSec is this + 30 s
RATE = 512 * 1024  # bytes/s: the 20 MB of weights take ~40 s, beyond TimeoutStartSec


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub({REPO: FakeRepo(model_files(1, WEIGHTS))}) as fake:
        yield fake


@pytest.fixture
def hf_agent(agent: AgentCli, tmp_path: Path) -> AgentCli:
    toml = agent.config_dir / "agent.toml"
    toml.write_text(f'cache_dir = "{tmp_path / "hf-cache"}"\n' + toml.read_text())  # top-level key first
    return agent


def deploy_text(hub: FakeHub) -> str:
    return (
        f'model = "{REPO}"\nenv = {{ HF_ENDPOINT = "{hub.url}" }}\n'
        'args = ["--fake-load-time", "0.3"]\ntests = []\n'
        # startup.timeout counts from the end of the download: 30 s is shorter than the download
        f"[startup]\nstall_timeout = {STALL}\ntimeout = 30\n"
    )


def engine_pid(main_pid: int) -> int:
    # The API server, not its EngineCore child (whose command line names fake_vllm too).
    children = [
        pid
        for pid in descendants(main_pid)
        if "fake_vllm" in _cmdline(pid) and not _cmdline(pid).startswith("VLLM::EngineCore")
    ]
    return children[0] if children else 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_download_longer_than_the_start_timeout_completes_and_the_unit_serves(
    hf_agent: AgentCli,
    hub: FakeHub,
    user_manager,  # noqa: ANN001
) -> None:
    unit = "vllm@slow.service"
    hub.rate = RATE
    hf_agent.write_deployment("slow", deploy_text(hub))
    timeout_start = user_manager.show(unit, "TimeoutStartUSec")
    started = time.monotonic()
    hf_agent.ok("start", "slow", "--no-wait")

    shown = wait_for(
        "systemctl status to show the download",
        lambda: _downloading_line(user_manager.systemctl("status", unit, check=False).stdout),
        timeout=60,
    )
    assert " MB at " in shown and "/s" in shown, shown
    wait_for("the unit to serve", lambda: hf_agent.status("slow")["state"] in ("ready", "failed"), timeout=240)
    took = time.monotonic() - started
    status = hf_agent.status("slow")
    assert status["state"] == "ready", (status, hf_agent.log("slow")[-2000:])
    assert took > STALL + 30, f"the download took {took:.0f}s: not longer than TimeoutStartSec ({timeout_start})"
    assert status["revision"] == hub.repos[REPO].commit

    main_pid = int(user_manager.show(unit, "MainPID")["MainPID"])
    engine = wait_for("the engine process", lambda: engine_pid(main_pid), timeout=30)
    environ = Path(f"/proc/{engine}/environ").read_bytes().split(b"\0")
    assert b"HF_HUB_OFFLINE=1" in environ
    snapshot = hf_agent.config_dir.parent / "hf-cache" / "models--acme--slow-llama" / "snapshots" / status["revision"]
    assert str(snapshot) in _cmdline(engine)

    hub.close()  # the Hub is gone: a restart must not need it
    hf_agent.ok("restart", "slow", timeout=180)
    assert hf_agent.status("slow")["state"] == "ready"
    assert "from the cache; the Hub was not asked" in hf_agent.log("slow")


def test_a_stalled_download_fails_with_the_reason_and_the_restart_resumes_it(
    hf_agent: AgentCli,
    hub: FakeHub,
    user_manager,  # noqa: ANN001
) -> None:
    # The network, not the configuration: systemd's next restart tries again, from where it stopped.
    hub.hold("model.safetensors", after=300_000, once=True)
    hf_agent.write_deployment("stuck", deploy_text(hub))
    hf_agent.ok("start", "stuck", "--no-wait")
    wait_for("the hold to be reached", lambda: hub.holding.is_set(), timeout=60)
    wait_for("the resumed download to serve", lambda: hf_agent.status("stuck")["state"] == "ready", timeout=180)
    assert int(user_manager.show("vllm@stuck.service", "NRestarts")["NRestarts"]) == 1
    failures = [
        line for line in hf_agent.ok("logs", "stuck", "--json").stdout.splitlines() if '"event": "failed"' in line
    ]
    assert len(failures) == 1, failures
    assert f"the download stalled: nothing received from {hub.url} for" in failures[0], failures[0]
    assert '"permanent": false' in failures[0]
    ranges = [seen.headers.get("range", "") for seen in hub.transfers("model.safetensors")]
    assert ranges[0] in ("", "bytes=0-") and ranges[-1].startswith("bytes=") and ranges[-1] != "bytes=0-", ranges


def _downloading_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if "downloading " in line), "")
