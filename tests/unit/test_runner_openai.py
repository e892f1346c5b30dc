"""The ``openai-smoke`` runner against the real fake engine, and against a server that answers
garbage (stdlib http.server in a thread)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from harness.fake_engine import Fake, wait_until
from vllm_agent.config.schema import AgentSettings, Deployment, TestSpec
from vllm_agent.plugin_api import EngineTarget, TestContext, TestOutcome
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.unit.posttests import run_post_start_tests
from vllm_agent_plugins.tests_openai import CHECKS, OpenAISmoke

DEPLOYMENT = Deployment(name="tiny", model="/models/tiny")


def hung_engine(start_engine: Callable[..., Fake]) -> Fake:
    fake = start_engine("--fake-mode", "hang-after:0")
    wait_until(lambda: "fake hang" in fake.stdout, 5, "the engine to hang")  # it checks every 50 ms
    return fake


def target_of(fake: Fake, served: str = "tiny", api_key: str | None = None) -> EngineTarget:
    return EngineTarget(deployment="tiny", url=fake.base, served_model_name=served, api_key=api_key)


async def smoke(target: EngineTarget, timeout: float = 60, **options: Any) -> dict[str, TestOutcome]:
    spec = TestSpec(runner="openai-smoke", timeout=timeout, **options)
    context = TestContext(config_dir=Path("/nonexistent"), deployment=DEPLOYMENT)
    outcomes = await asyncio.wait_for(OpenAISmoke().run(target, spec, context), timeout)
    assert [o.name for o in outcomes] == [
        f"openai-smoke/{check}" for check in CHECKS if check in options.get("checks", CHECKS)
    ]
    return {o.name.split("/", 1)[1]: o for o in outcomes}


def failing(outcomes: dict[str, TestOutcome]) -> dict[str, str]:
    return {name: o.detail for name, o in outcomes.items() if not o.ok}


# The real fake engine ----------------------------------------------------------------------------


async def test_passes_on_a_healthy_engine(start_engine) -> None:
    outcomes = await smoke(target_of(start_engine()))
    assert failing(outcomes) == {}
    assert all(o.duration > 0 for o in outcomes.values())


async def test_runs_by_default_through_the_launchers_entry_point(start_engine) -> None:
    plugins = make_plugin_manager(AgentSettings())
    context = TestContext(config_dir=Path("/nonexistent"), deployment=DEPLOYMENT)
    outcomes = await run_post_start_tests(
        plugins, target_of(start_engine()), DEPLOYMENT, context, log=structlog.get_logger()
    )
    assert [(o.name, o.ok) for o in outcomes] == [(f"openai-smoke/{check}", True) for check in CHECKS]


async def test_a_wrong_served_name_fails_naming_the_check(start_engine) -> None:
    outcomes = await smoke(target_of(start_engine(), served="other"))
    bad = failing(outcomes)
    assert bad["models"] == "models: /v1/models does not list 'other' (it lists 'tiny'); is served_model_name right?"
    assert bad["completion"] == "completion: HTTP 404 from POST /v1/completions: The model `other` does not exist."
    assert set(bad) == {"models", "completion", "chat", "chat-stream"}  # a 404 is still a 4xx


async def test_sends_the_api_key(start_engine) -> None:
    fake = start_engine("--api-key", "s3cret")
    assert failing(await smoke(target_of(fake, api_key="s3cret"))) == {}
    bad = failing(await smoke(target_of(fake), checks=["models"]))
    assert bad == {"models": "models: HTTP 401 from GET /v1/models: Unauthorized (check the api_key credential)"}


async def test_a_hung_engine_fails_each_check_by_its_deadline(start_engine) -> None:
    fake = hung_engine(start_engine)
    started = time.monotonic()
    outcomes = await smoke(target_of(fake), deadline=0.5)
    assert time.monotonic() - started < 5
    assert failing(outcomes) == {
        check: f"{check}: no complete answer within 0.5s (the check's deadline)"
        for check in ("completion", "chat", "chat-stream")
    }
    assert outcomes["models"].ok and outcomes["invalid-request"].ok  # answered without the engine core


async def test_stays_within_the_tests_timeout_whatever_the_deadline(start_engine) -> None:
    fake = hung_engine(start_engine)
    outcomes = await smoke(target_of(fake), timeout=2, deadline=30)  # wait_for(2) must not fire
    assert re.fullmatch(
        r"completion: no complete answer within [\d.]+s \(what was left of the test's 2s timeout\)",
        outcomes["completion"].detail,
    )
    assert outcomes["chat"].detail == "chat: not run: the test's timeout (2s) was spent"


async def test_an_engine_dying_mid_test_gives_failing_outcomes(start_engine) -> None:
    fake = start_engine("--fake-mode", "crash-after-requests:2")
    outcomes = await smoke(target_of(fake))
    assert [name for name, o in outcomes.items() if o.ok] == ["models", "completion", "chat"]
    stream = outcomes["chat-stream"].detail
    assert "cannot connect to" in stream or "did the engine die?" in stream, stream
    assert not outcomes["invalid-request"].ok


async def test_a_refused_connection_skips_the_rest_with_the_same_detail() -> None:
    target = EngineTarget(deployment="tiny", url="http://127.0.0.1:9", served_model_name="tiny")
    outcomes = await smoke(target)
    assert outcomes["models"].detail.startswith("models: cannot connect to http://127.0.0.1:9: ")
    reason = outcomes["models"].detail.removeprefix("models: ")
    assert [o.detail for o in list(outcomes.values())[1:]] == [f"{c}: not run: {reason}" for c in CHECKS[1:]]


def test_problems_name_each_bad_option() -> None:
    context = TestContext(config_dir=Path("/nonexistent"), deployment=DEPLOYMENT)
    spec = TestSpec(runner="openai-smoke", deadline=0, promt="Hi", checks=["chat", "embeddings"])
    assert OpenAISmoke().problems(spec, context) == [
        "promt: unknown option for runner 'openai-smoke' (known: deadline, prompt, checks)",
        "deadline: must be a number of seconds > 0, got 0",
        "checks: unknown check 'embeddings' (known: models, completion, chat, chat-stream, invalid-request)",
    ]
    assert OpenAISmoke().problems(TestSpec(runner="openai-smoke"), context) == []


# A server that answers garbage ------------------------------------------------------------------


def good_answer(check: str) -> tuple[int, str, bytes]:
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    bodies = {
        "models": {"object": "list", "data": [{"id": "tiny", "object": "model"}]},
        "completion": {"object": "text_completion", "choices": [{"index": 0, "text": " world"}], "usage": usage},
        "chat": {"choices": [{"message": {"role": "assistant", "content": "Hi"}}], "usage": usage},
        "invalid-request": {"error": {"message": "max_tokens must be at least 1", "code": 400}},
    }
    if check == "chat-stream":
        chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
        return 200, "text/event-stream", f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
    return (400 if check == "invalid-request" else 200), "application/json", json.dumps(bodies[check]).encode()


class GarbageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), GarbageHandler)
        self.answers: dict[str, tuple[int, str, bytes] | str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class GarbageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: GarbageServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms per answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:
        self.answer("models")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path == "/v1/completions":
            self.answer("completion")
        elif body.get("max_tokens") == -1 or "messages" not in body:
            self.answer("invalid-request")
        else:
            self.answer("chat-stream" if body.get("stream") else "chat")

    def answer(self, check: str) -> None:
        answer = self.server.answers.get(check) or good_answer(check)
        if answer == "truncated":  # promises more than it sends, then hangs up
            self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
            self.close_connection = True
            return
        assert not isinstance(answer, str)
        status, kind, data = answer
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def garbage() -> Iterator[GarbageServer]:
    server = GarbageServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _json(body: object, status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


def _sse(*events: str) -> tuple[int, str, bytes]:
    return 200, "text/event-stream", "".join(f"data: {event}\n\n" for event in events).encode()


_TEXT = {"choices": [{"text": "x"}]}
_CHAT = {"choices": [{"message": {"content": "Hi"}}]}
_CHUNK = json.dumps({"object": "chat.completion.chunk", "choices": []})
_USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}

GARBAGE = [
    (
        "models",
        (200, "text/html", b"<html>502 Bad Gateway</html>"),
        "models: GET /v1/models answered 200 with a body that is not JSON: <html>502 Bad Gateway</html>",
    ),
    ("models", _json(None), "models: the answer is null, not a JSON object"),
    ("models", _json({"data": {"id": "tiny"}}), 'models: data is dict {"id": "tiny"}, not a list'),
    ("completion", _json({"choices": "nope", "usage": _USAGE}), "completion: choices is str 'nope', not a list"),
    ("completion", _json({"choices": [], "usage": _USAGE}), "completion: choices is an empty list"),
    (
        "completion",
        _json({"choices": [{"text": None}], "usage": _USAGE}),
        "completion: choices[0].text is null, not text",
    ),
    ("completion", _json(_TEXT), "completion: usage is missing"),
    (
        "completion",
        _json({**_TEXT, "usage": {**_USAGE, "prompt_tokens": "3"}}),
        "completion: usage.prompt_tokens is str '3', not a count",
    ),
    (
        "completion",
        _json({**_TEXT, "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}}),
        "completion: usage.completion_tokens is 9, expected 1 to max_tokens 4",
    ),
    ("completion", "truncated", "completion: POST /v1/completions: the connection closed before a complete answer"),
    (
        "completion",
        _json({"error": {"message": "CUDA error: an illegal memory access"}}, 500),
        "completion: HTTP 500 from POST /v1/completions: CUDA error: an illegal memory access",
    ),
    (
        "chat",
        _json({**_CHAT, "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 7}}),
        "chat: usage.total_tokens 7 != prompt 3 + completion 5",
    ),
    (
        "chat",
        _json({"choices": [{"message": {"content": 42}}], "usage": _USAGE}),
        "chat: choices[0].message.content is int 42, not text",
    ),
    ("chat", _json({"choices": [{"text": "Hi"}], "usage": _USAGE}), "chat: choices[0].message is missing"),
    (
        "chat",
        _json({"error": {"message": "default chat template is no longer allowed", "code": 400}}, 400),
        "chat: HTTP 400 from POST /v1/chat/completions: default chat template is no longer allowed "
        "(a base model without a chat template? leave chat and chat-stream out of `checks`)",
    ),
    ("chat-stream", _sse(_CHUNK), "chat-stream: the stream ended after 1 events without 'data: [DONE]'"),
    ("chat-stream", _sse("[DONE]"), "chat-stream: the stream held no chat.completion.chunk event"),
    ("chat-stream", _sse("{not json", "[DONE]"), "chat-stream: event 1 is not JSON: {not json"),
    (
        "chat-stream",
        _sse(json.dumps({"object": "chat.completion", "choices": []}), "[DONE]"),
        "chat-stream: event 1 is not a chat.completion.chunk (object str 'chat.completion')",
    ),
    ("chat-stream", _sse(_CHUNK, "[DONE]", _CHUNK), "chat-stream: data after [DONE]:"),
    (
        "chat-stream",
        _json({"choices": []}),
        "chat-stream: content-type is 'application/json', not text/event-stream",
    ),
    (
        "invalid-request",
        _json({"detail": "Internal Server Error"}, 500),
        "invalid-request: HTTP 500 for max_tokens=-1, expected a 4xx: Internal Server Error",
    ),
    (
        "invalid-request",
        _json({"choices": []}),
        "invalid-request: max_tokens=-1 was accepted (HTTP 200); expected a 4xx",
    ),
]


@pytest.mark.parametrize(
    ("check", "answer", "detail"), GARBAGE, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(GARBAGE)]
)
async def test_garbage_answers_fail_with_a_clear_detail(garbage: GarbageServer, check, answer, detail) -> None:
    garbage.answers[check] = answer
    outcomes = await smoke(EngineTarget(deployment="x", url=garbage.url, served_model_name="tiny"), deadline=5)
    bad = failing(outcomes)
    assert list(bad) == [check]
    assert bad[check].startswith(detail), bad[check]
    assert "\n" not in bad[check]
    if not isinstance(answer, str) and answer[0] == 200 and check != "chat-stream":
        assert outcomes[check].output  # what the server sent goes to the log


async def test_the_garbage_server_itself_passes(garbage: GarbageServer) -> None:
    outcomes = await smoke(EngineTarget(deployment="x", url=garbage.url, served_model_name="tiny"))
    assert failing(outcomes) == {}
