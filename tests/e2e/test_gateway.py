"""The host's gateway as an operator runs it: vllm-agent.service and vllm-agent-gateway.service
under the real user manager, deployments as real units running the fake engine.

Routing by served name, alias and pattern; only ready deployments get requests while one
restarts; a fallback answers for a crash-looping deployment; retries before the first byte;
Dynamo's fault-tolerance pattern (two engines, a long stream, the serving engine killed with
SIGKILL or SIGTERM): one complete stream, no gap over 6 s, no lost or repeated text, one
migration counted; with migration_limit = 0 an error event instead.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness.agent_cli import AgentCli
from harness.ports import agent_port
from harness.processes import wait_for

WORDS = "hello world this is a fake vllm engine answer with deterministic tokens for tests only ok".split()
SLOW = ["--fake-token-latency", "0.05", "--fake-max-output-tokens", "60", "--max-model-len", "512"]


def expected(count: int) -> str:
    return "".join(" " + WORDS[i % 16] for i in range(count))


class Gateway:
    def __init__(self, base: str, agent: AgentCli, user_manager) -> None:  # noqa: ANN001
        self.base = base
        self.agent = agent
        self.user_manager = user_manager

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.base + path, json=body, timeout=60)

    def models(self) -> set[str]:
        try:
            return {m["id"] for m in httpx.get(self.base + "/v1/models", timeout=10).json()["data"]}
        except httpx.TransportError:
            return set()

    def counter(self, name: str) -> float:
        text = httpx.get(self.base + "/metrics", timeout=10).text
        prefix = f"vllm_agent_gateway_{name}_total"
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix + "{"))

    def start(self) -> None:
        self.user_manager.systemctl("start", "vllm-agent.service", "vllm-agent-gateway.service")


@pytest.fixture
def gateway(agent: AgentCli, user_manager) -> Iterator[Callable[..., Gateway]]:  # noqa: ANN001
    def configure(extra: str = "") -> Gateway:
        port = agent_port()
        with (agent.config_dir / "agent.toml").open("a") as toml:
            toml.write(f'[gateway]\nlisten = "127.0.0.1:{port}"\n{extra}')
        return Gateway(f"http://127.0.0.1:{port}", agent, user_manager)

    yield configure
    user_manager.systemctl("stop", "vllm-agent-gateway.service", check=False)


def deploy(agent: AgentCli, model_dir: Path, name: str, *args: str, extra: str = "", start: bool = True) -> None:
    agent.write_deployment(
        name, f'model = "{model_dir}"\nargs = {json.dumps(["--fake-load-time", "0.3", *args])}\n{extra}'
    )
    if start:
        agent.ok("start", name, timeout=180)


def engine_pid(user_manager, name: str) -> int:  # noqa: ANN001
    """The engine is the launcher's child in the unit's cgroup."""
    launcher = int(user_manager.show(f"vllm@{name}.service", "MainPID")["MainPID"])
    return int(Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()[0])


def test_requests_route_by_name_alias_and_pattern_and_skip_a_restarting_deployment(  # noqa: ANN001
    agent, model_dir, user_manager, gateway
) -> None:
    gw = gateway('[[gateway.routes]]\nmatch = "gpt-.*"\nto = ["b"]\n')
    deploy(agent, model_dir, "a", extra='aliases = ["chat"]\n')
    deploy(agent, model_dir, "b")
    gw.start()
    wait_for("the gateway to list both", lambda: gw.models() == {"a", "b", "chat"}, 60)
    for model, answered in (("a", "a"), ("chat", "a"), ("b", "b"), ("gpt-4o", "b")):
        response = gw.post("/v1/completions", {"model": model, "prompt": "x", "max_tokens": 2})
        assert response.status_code == 200, response.text
        assert response.headers["x-vllm-agent-deployment"] == answered
        assert response.json()["model"] == answered  # the served name of who answered

    # A restart with a slow load: the gateway says 503 + Retry-After, never a refused connection.
    deploy(agent, model_dir, "a", "--fake-load-time", "4", extra='aliases = ["chat"]\n', start=False)
    agent.ok("restart", "a", "--no-wait")
    refused = wait_for(
        "a 503 while a restarts",
        lambda: (r := gw.post("/v1/completions", {"model": "chat", "prompt": "x"})).status_code == 503 and r,
        60,
    )
    assert int(refused.headers.get("retry-after", 0)) >= 1, (refused.text, agent.status("a"))
    assert "chat" not in gw.models() and "b" in gw.models()
    wait_for(
        "a ready again", lambda: gw.post("/v1/completions", {"model": "chat", "prompt": "x"}).status_code == 200, 90
    )


def test_a_fallback_answers_for_a_crash_looping_deployment(agent, model_dir, user_manager, gateway) -> None:  # noqa: ANN001
    gw = gateway()
    deploy(agent, model_dir, "backup")
    deploy(agent, model_dir, "main", "--fake-mode", "exit-at-start", extra='fallback = ["backup"]\n', start=False)
    agent.run("start", "main", timeout=180)  # fails: its engine exits at start, until the start limit
    gw.start()
    wait_for(
        "main to be in crash-loop or failed", lambda: agent.status("main")["state"] in ("crash-loop", "failed"), 90
    )
    wait_for("the gateway to route main", lambda: "main" in gw.models(), 60)
    response = gw.post("/v1/chat/completions", {"model": "main", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    assert response.headers["x-vllm-agent-deployment"] == "backup" and response.json()["model"] == "backup"
    assert gw.counter("fallbacks") == 1


def test_an_engine_that_drops_the_request_is_retried_on_another_before_the_first_byte(  # noqa: ANN001
    agent, model_dir, user_manager, gateway
) -> None:
    gw = gateway()
    # Ready by its /health, but its API server dies on the first request it gets.
    only_http = 'served_model_name = "tiny"\ntests = []\n[health]\nchecks = ["http"]\n'
    deploy(agent, model_dir, "a-drops", "--fake-mode", "crash-after-requests:0", extra=only_http)
    deploy(agent, model_dir, "b-good", extra='served_model_name = "tiny"\n')
    gw.start()
    wait_for("the gateway to route tiny", lambda: "tiny" in gw.models(), 60)
    response = gw.post("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 3})
    assert response.status_code == 200 and response.headers["x-vllm-agent-deployment"] == "b-good"
    assert response.json()["choices"][0]["text"] == expected(3)
    assert gw.counter("retries") == 1


def stream_and_kill(gw: Gateway, user_manager, sig: signal.Signals) -> tuple[str, list[Any], float]:  # noqa: ANN001
    """A 60-token stream; the engine serving it gets ``sig`` after five events."""
    body = {"model": "tiny", "prompt": "Say:", "stream": True, "max_tokens": 60}
    events: list[Any] = []
    gaps = [0.0]
    with httpx.stream("POST", gw.base + "/v1/completions", json=body, timeout=60) as response:
        serving = response.headers["x-vllm-agent-deployment"]
        last = time.monotonic()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            events.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
            if len(events) == 5:
                os.kill(engine_pid(user_manager, serving), sig)
    return serving, events, max(gaps)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_stream_survives_the_death_of_its_engine(agent, model_dir, user_manager, gateway, sig) -> None:  # noqa: ANN001
    gw = gateway()
    for name in ("m1", "m2"):
        deploy(agent, model_dir, name, *SLOW, extra='served_model_name = "tiny"\n')
    gw.start()
    wait_for("the gateway to route tiny", lambda: "tiny" in gw.models(), 60)
    _, events, gap = stream_and_kill(gw, user_manager, sig)
    text = "".join(c.get("text", "") for e in events if isinstance(e, dict) for c in e.get("choices", []))
    assert text == expected(60), "one stream, nothing lost or repeated"
    assert events[-1] == "[DONE]" and not [e for e in events if isinstance(e, dict) and "error" in e]
    assert gap < 6, f"a gap of {gap:.1f}s in the stream"
    assert gw.counter("migrations") == 1


def test_with_migration_off_the_client_gets_an_error_not_a_truncated_stream(  # noqa: ANN001
    agent, model_dir, user_manager, gateway
) -> None:
    gw = gateway("migration_limit = 0\n")
    for name in ("m1", "m2"):
        deploy(agent, model_dir, name, *SLOW, extra='served_model_name = "tiny"\n')
    gw.start()
    wait_for("the gateway to route tiny", lambda: "tiny" in gw.models(), 60)
    _, events, _ = stream_and_kill(gw, user_manager, signal.SIGKILL)
    errors = [e["error"] for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and "migration limit (0)" in errors[0]["message"]
    assert not [c for e in events if isinstance(e, dict) for c in e.get("choices", []) if c.get("finish_reason")]
    assert gw.counter("migrations") == 0
