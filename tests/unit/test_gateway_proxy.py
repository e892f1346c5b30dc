"""The gateway's request path against real fake-engine processes: streams, migration when an
engine dies mid-stream, cancellation, retries before the first byte, refusals.

The deployment view is handed to the gateway as the daemon would push it (``Gateway.update``);
the daemon's side of that is tested in tests/e2e/test_gateway.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness.fake_engine import Fake
from harness.ports import PortLease
from vllm_agent.config.schema import GatewayRoute, GatewaySettings
from vllm_agent.gateway.keys import Keys, load_keys
from vllm_agent.gateway.metrics import AccessLog
from vllm_agent.gateway.proxy import Gateway
from vllm_agent.gateway.server import serve

WORDS = "hello world this is a fake vllm engine answer with deterministic tokens for tests only ok".split()


def expected(count: int, chat: bool) -> str:
    return "".join(w if (chat and i == 0) else " " + w for i, w in ((i, WORDS[i % 16]) for i in range(count)))


def row(name: str, port: int, state: str = "ready", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "served": extra.pop("served", "tiny"),
        "state": state,
        "host": "127.0.0.1",
        "port": port,
    } | extra


class Running:
    def __init__(self, gateway: Gateway, base: str, log: list[str]) -> None:
        self.gateway = gateway
        self.base = base
        self.log = log

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=kw.pop("timeout", 30), **kw)

    def metric(self, name: str) -> dict[tuple[str, ...], int]:
        return dict(self.gateway.metrics.counts[name])


class _Lines:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.extend(line for line in text.splitlines() if line)

    def flush(self) -> None:
        pass


@pytest.fixture
async def start_gateway() -> AsyncIterator[Callable[..., Any]]:
    servers: list[asyncio.Server] = []
    gateways: list[Gateway] = []

    async def start(rows: list[dict[str, Any]], keys: Keys | None = None, **settings: Any) -> Running:
        log: list[str] = []
        gateway = Gateway(GatewaySettings(**settings), keys or Keys(), access=AccessLog(_Lines(log)))
        gateway.update(rows)
        server = await serve(gateway.handle, "127.0.0.1", 0)
        servers.append(server)
        gateways.append(gateway)
        port = server.sockets[0].getsockname()[1]
        return Running(gateway, f"http://127.0.0.1:{port}", log)

    yield start
    for server in servers:
        server.close()
    for gateway in gateways:
        gateway.pool.close()


def slow_engine(start_fake: Callable[..., Fake], tokens: int = 40, latency: float = 0.05) -> Fake:
    fake = start_fake(
        "--fake-token-latency",
        str(latency),
        "--fake-max-output-tokens",
        str(tokens),
        "--max-model-len",
        "512",
        load_time=0.05,
    )
    fake.wait_ready()
    return fake


async def read_stream(response: httpx.Response, on_event: Callable[[int], None] | None = None) -> list[Any]:
    """The events of an SSE answer (``"[DONE]"`` as a string), with the longest gap between them."""
    events: list[Any] = []
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            assert event.startswith("data: "), event
            payload = event[6:]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
            if on_event is not None:
                on_event(len(events))
    return events


def text_of(events: list[Any], chat: bool) -> str:
    out = ""
    for event in events:
        if isinstance(event, dict):
            for choice in event.get("choices", []):
                out += (choice.get("delta", {}).get("content") or "") if chat else choice.get("text", "")
    return out


async def test_a_stream_through_an_alias_reaches_the_engine_under_its_served_name(start_fake, start_gateway) -> None:
    fake = slow_engine(start_fake, tokens=8, latency=0)
    gw = await start_gateway([row("one", fake.port, aliases=["chat-model"])])
    async with gw.client() as client:
        body = {"model": "chat-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["x-vllm-agent-deployment"] == "one"
            events = await read_stream(response)
        assert events[-1] == "[DONE]" and events[0]["model"] == "tiny"
        assert text_of(events, chat=True) == expected(8, chat=True)
        models = (await client.get("/v1/models")).json()
        assert {m["id"] for m in models["data"]} == {"tiny", "chat-model"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
async def test_an_engine_dying_mid_stream_hands_the_stream_to_the_other_engine(
    start_fake, start_gateway, sig: signal.Signals, chat: bool
) -> None:
    fakes = {"a": slow_engine(start_fake), "b": slow_engine(start_fake)}
    gw = await start_gateway([row(name, fake.port) for name, fake in fakes.items()])
    if chat:
        path, body = "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    else:
        path, body = "/v1/completions", {"model": "tiny", "prompt": "Say:"}
    body |= {"stream": True, "max_tokens": 40, "stream_options": {"include_usage": True}}
    times: list[float] = []
    async with gw.client() as client, client.stream("POST", path, json=body) as response:
        serving = fakes[response.headers["x-vllm-agent-deployment"]]

        def on_event(count: int) -> None:
            times.append(time.monotonic())
            if count == 6:
                os.kill(serving.proc.pid, sig)

        events = await read_stream(response, on_event)
    assert serving.proc.wait(5) is not None
    assert text_of(events, chat) == expected(40, chat), "no token lost or repeated"
    assert events[-1] == "[DONE]" and not any("error" in e for e in events if isinstance(e, dict))
    finals = [c["finish_reason"] for e in events if isinstance(e, dict) for c in e["choices"] if c.get("finish_reason")]
    assert finals == ["length"]
    assert len({e["id"] for e in events if isinstance(e, dict)}) == 1, "one stream, one id"
    usage = events[-2]["usage"]
    assert usage["completion_tokens"] == 40
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 6
    assert sum(gw.metric("migrations").values()) == 1


async def test_with_migration_off_a_dying_engine_gives_an_error_event_not_a_clean_end(
    start_fake, start_gateway
) -> None:
    fakes = {"a": slow_engine(start_fake), "b": slow_engine(start_fake)}
    gw = await start_gateway([row(name, fake.port) for name, fake in fakes.items()], migration_limit=0)
    body = {"model": "tiny", "prompt": "Say:", "stream": True, "max_tokens": 40}
    async with gw.client() as client, client.stream("POST", "/v1/completions", json=body) as response:
        serving = fakes[response.headers["x-vllm-agent-deployment"]]
        events = await read_stream(response, lambda n: n == 4 and os.kill(serving.proc.pid, signal.SIGKILL))
    errors = [e["error"] for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and "migration limit (0)" in errors[0]["message"]
    assert not [c for e in events if isinstance(e, dict) for c in e.get("choices", []) if c.get("finish_reason")]
    assert sum(gw.metric("migrations").values()) == 0


@pytest.mark.parametrize("extra", [{"n": 2}, {"logprobs": 1}, {"response_format": {"type": "json_object"}}])
async def test_a_stream_that_cannot_be_continued_faithfully_gets_an_error_event(
    start_fake, start_gateway, extra: dict[str, Any]
) -> None:
    fakes = {"a": slow_engine(start_fake), "b": slow_engine(start_fake)}
    gw = await start_gateway([row(name, fake.port) for name, fake in fakes.items()])
    body = {"model": "tiny", "prompt": "Say:", "stream": True, "max_tokens": 40} | extra
    async with gw.client() as client, client.stream("POST", "/v1/completions", json=body) as response:
        serving = fakes[response.headers["x-vllm-agent-deployment"]]
        events = await read_stream(response, lambda n: n == 4 and os.kill(serving.proc.pid, signal.SIGKILL))
    errors = [e["error"]["message"] for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and "cannot be continued" in errors[0], errors
    assert events[-1] == "[DONE]"


async def test_a_client_that_leaves_stops_the_engine_generating(start_fake, start_gateway) -> None:
    fake = slow_engine(start_fake, tokens=200, latency=0.05)
    gw = await start_gateway([row("one", fake.port)])

    def running() -> float:
        for line in fake.get("/metrics").text.splitlines():
            if line.startswith("vllm:num_requests_running"):
                return float(line.split()[-1])
        raise AssertionError("no vllm:num_requests_running")

    body = {"model": "tiny", "prompt": "Say:", "stream": True, "max_tokens": 200}
    async with gw.client() as client, client.stream("POST", "/v1/completions", json=body) as response:
        lines = response.aiter_lines()  # held: a dropped iterator would close the stream early
        for _ in range(10):  # five events: data lines and blank lines
            await anext(lines)
        assert await asyncio.to_thread(running) == 1
        await lines.aclose()
    deadline = time.monotonic() + 2
    while await asyncio.to_thread(running) != 0:
        assert time.monotonic() < deadline, "the engine still generates 2 s after the client left"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0)
    assert gw.metric("cancellations") == {("one",): 1}


async def test_a_refused_connection_is_retried_on_the_next_engine_before_the_first_byte(
    start_fake, start_gateway
) -> None:
    fake = slow_engine(start_fake, tokens=4, latency=0)
    with PortLease() as dead:  # bound, not listening: connections are refused
        gw = await start_gateway([row("a-dead", dead.port), row("b-live", fake.port)])
        async with gw.client() as client:
            response = await client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 4})
    assert response.status_code == 200 and response.headers["x-vllm-agent-deployment"] == "b-live"
    assert response.json()["choices"][0]["text"] == expected(4, chat=False)
    assert gw.metric("retries") == {("a-dead",): 1}


async def test_retries_are_bounded(start_gateway) -> None:
    with PortLease() as one, PortLease() as two, PortLease() as three:
        rows = [row("a", one.port), row("b", two.port), row("c", three.port)]
        gw = await start_gateway(rows, retries=1)
        async with gw.client() as client:
            response = await client.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
    assert response.status_code == 502 and "b:" in response.json()["error"]["message"]
    assert gw.metric("retries") == {("a",): 1, ("b",): 1}, "two attempts: the first and one retry"


async def test_fallback_answers_when_the_pool_is_not_ready_and_says_who_answered(start_fake, start_gateway) -> None:
    fake = slow_engine(start_fake, tokens=4, latency=0)
    rows = [row("main", 1, state="crash-loop", served="big", fallback=["small"]), row("small", fake.port)]
    gw = await start_gateway(rows)
    async with gw.client() as client:
        response = await client.post("/v1/completions", json={"model": "big", "prompt": "x", "max_tokens": 4})
    assert response.status_code == 200
    assert response.headers["x-vllm-agent-deployment"] == "small" and response.json()["model"] == "tiny"
    assert gw.metric("fallbacks") == {("small",): 1}


async def test_nothing_ready_is_a_503_with_retry_after_from_the_starting_deployments_progress(start_gateway) -> None:
    now = time.time()
    rows = [row("main", 1, state="starting", started_at=now - 10, load_seconds=40)]
    gw = await start_gateway(rows)
    async with gw.client() as client:
        response = await client.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
    assert response.status_code == 503
    assert 25 <= int(response.headers["retry-after"]) <= 30
    assert (await gw.client().get("/v1/models")).json()["data"] == []


async def test_pattern_routes_follow_agent_toml_order(start_fake, start_gateway) -> None:
    fake = slow_engine(start_fake, tokens=2, latency=0)
    routes = [GatewayRoute(match="gpt-4.*", to=["tiny"]), GatewayRoute(match=".*", to=["nothing"])]
    gw = await start_gateway([row("one", fake.port)], routes=routes)
    async with gw.client() as client:
        ok = await client.post("/v1/completions", json={"model": "gpt-4o-mini", "prompt": "x"})
        other = await client.post("/v1/completions", json={"model": "claude", "prompt": "x"})
    assert ok.status_code == 200 and ok.headers["x-vllm-agent-deployment"] == "one"
    assert other.status_code == 503  # matched the catch-all, whose pool is empty


async def test_only_inference_paths_reach_an_engine(start_fake, start_gateway) -> None:
    fake = slow_engine(start_fake, tokens=2, latency=0)
    gw = await start_gateway([row("one", fake.port)])
    async with gw.client() as client:
        assert (await client.post("/reset_prefix_cache")).status_code == 403
        assert (await client.post("/sleep")).status_code == 403
        assert (await client.get("/version")).status_code == 404
        assert (await client.get("/v1/completions")).status_code == 405
        unknown = await client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
        assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
        assert (await client.post("/v1/completions", content=b"{")).status_code == 400
    assert "POST /reset_prefix_cache" not in fake.stdout


async def test_api_keys_limit_models_and_concurrency(start_fake, start_gateway, tmp_path: Path) -> None:
    fake = slow_engine(start_fake, tokens=20, latency=0.05)
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "team.toml").write_text(
        'key = "sk-team-0123456789"\nmodels = ["tiny"]\nmax_concurrency = 1\n'
    )
    (tmp_path / "gateway" / "other.toml").write_text('key = "sk-other-0123456789"\nmodels = ["big.*"]\n')
    gw = await start_gateway([row("one", fake.port)], keys=load_keys(tmp_path))
    body = {"model": "tiny", "prompt": "The secret prompt", "max_tokens": 20}
    team = {"authorization": "Bearer sk-team-0123456789"}
    async with gw.client() as client:
        assert (await client.post("/v1/completions", json=body)).status_code == 401
        denied = await client.post(
            "/v1/completions", json=body, headers={"authorization": "Bearer sk-other-0123456789"}
        )
        assert denied.status_code == 403
        first = asyncio.create_task(client.post("/v1/completions", json=body, headers=team))
        while not gw.gateway.outstanding["one"]:
            await asyncio.sleep(0.01)
        assert (await client.post("/v1/completions", json=body, headers=team)).status_code == 429
        assert (await first).status_code == 200
        listed = await client.get("/v1/models", headers={"authorization": "Bearer sk-other-0123456789"})
        assert listed.json()["data"] == [], "a key sees only the models it may use"
        listed = await client.get("/v1/models", headers=team)
        assert [m["id"] for m in listed.json()["data"]] == ["tiny"]
    gw.gateway.access.flush()
    logged = [json.loads(line[3:]) for line in gw.log]
    assert {"key": "team", "status": 200, "deployment": "one"}.items() <= logged[-1].items()
    assert not any("secret prompt" in line or "sk-team" in line for line in gw.log)


async def test_new_routes_apply_to_the_deployments_already_known(start_fake, start_gateway) -> None:
    fake = slow_engine(start_fake, tokens=2, latency=0)
    gw = await start_gateway([row("one", fake.port)])
    async with gw.client() as client:
        assert (await client.post("/v1/completions", json={"model": "gpt-4", "prompt": "x"})).status_code == 404
        gw.gateway.configure(GatewaySettings(routes=[GatewayRoute(match="gpt-.*", to=["one"])]), Keys(), None)
        routed = await client.post("/v1/completions", json={"model": "gpt-4", "prompt": "x"})
    assert routed.status_code == 200 and routed.headers["x-vllm-agent-deployment"] == "one"


def test_the_fake_engine_continues_its_own_text_as_vllm_continues_a_prompt(start_fake) -> None:
    fake = slow_engine(start_fake, tokens=4, latency=0)
    continued = fake.post("/v1/completions", {"model": "tiny", "prompt": "Say: hello world", "max_tokens": 2})
    assert continued.json()["choices"][0]["text"] == " this is"
    chat = {"model": "tiny", "max_tokens": 2, "continue_final_message": True, "add_generation_prompt": False}
    chat["messages"] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello world this"}]
    assert fake.post("/v1/chat/completions", chat).json()["choices"][0]["message"]["content"] == " is a"
    refused = fake.post("/v1/chat/completions", chat | {"add_generation_prompt": True})
    assert refused.status_code == 400 and "add_generation_prompt" in refused.json()["error"]["message"]


async def test_a_stream_whose_engine_dies_before_its_first_event_is_retried_not_migrated(
    start_fake, start_gateway
) -> None:
    async def headers_then_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        writer.close()

    broken = await asyncio.start_server(headers_then_gone, "127.0.0.1", 0)
    fake = slow_engine(start_fake, tokens=3, latency=0)
    try:
        gw = await start_gateway([row("a-broken", broken.sockets[0].getsockname()[1]), row("b", fake.port)])
        body = {"model": "tiny", "prompt": "x", "stream": True, "max_tokens": 3}
        async with gw.client() as client, client.stream("POST", "/v1/completions", json=body) as response:
            assert response.headers["x-vllm-agent-deployment"] == "b"
            events = await read_stream(response)
    finally:
        broken.close()
    assert text_of(events, chat=False) == expected(3, chat=False) and events[-1] == "[DONE]"
    assert gw.metric("retries") == {("a-broken",): 1} and gw.metric("migrations") == {}


async def test_a_client_that_expects_100_continue_gets_it_before_sending_its_body(start_gateway) -> None:
    gw = await start_gateway([])
    host, port = gw.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"model": "tiny", "prompt": "x"}'
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).startswith(b"HTTP/1.1 404")
    writer.close()
