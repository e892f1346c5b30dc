"""The example plugin, tested with vllm-agent's testing kit (fixtures from its pytest plugin)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from vllm_agent.plugin_api import Deployment, TestContext, TestSpec
from vllm_agent.testing import check_event_sink, check_health_strategy, check_test_runner
from vllm_agent_example import plugin
from vllm_agent_example.webhook import ENV


@pytest.fixture
def plugins(agent_plugins):  # noqa: ANN001, ANN201 - the agent's plugin facade
    return agent_plugins(plugin, name="example")


def context(tmp_path: Path) -> TestContext:
    return TestContext(config_dir=tmp_path, deployment=Deployment(name="m", model="org/m"))


async def test_the_health_strategy_passes_its_contract(plugins, fake_engine) -> None:  # noqa: ANN001
    await check_health_strategy(plugins.health_strategy("example-served-model"), fake_engine.target)


async def test_the_health_strategy_fails_when_the_served_name_is_missing(plugins, fake_engine) -> None:  # noqa: ANN001
    from dataclasses import replace

    other = replace(fake_engine.target, served_model_name="not-served")
    result = await plugins.health_strategy("example-served-model").check(other, 10)
    assert not result.ok and "not 'not-served'" in result.detail


async def test_the_runner_passes_its_contract(plugins, fake_engine, tmp_path: Path) -> None:  # noqa: ANN001
    spec = TestSpec(runner="example-answers", prompts=[{"prompt": "Hi"}, {"prompt": "Bye"}])
    outcomes = await check_test_runner(
        plugins.test_runner("example-answers"), spec, context(tmp_path), fake_engine.target
    )
    assert [outcome.name for outcome in outcomes] == ["example-answers[0]", "example-answers[1]"]


async def test_the_runner_fails_an_answer_without_the_expected_text(plugins, fake_engine, tmp_path: Path) -> None:  # noqa: ANN001
    spec = TestSpec(runner="example-answers", prompts=[{"prompt": "Hi", "expect": "\x00never"}])
    (outcome,) = await plugins.test_runner("example-answers").run(fake_engine.target, spec, context(tmp_path))
    assert not outcome.ok and "lacks" in outcome.detail


def test_the_runner_names_bad_options(plugins, tmp_path: Path) -> None:  # noqa: ANN001
    runner = plugins.test_runner("example-answers")
    spec = TestSpec(runner="example-answers", prompts=[{"text": "x"}], color="red")
    assert runner.problems(spec, context(tmp_path)) == [
        "color: unknown option for runner 'example-answers' (known: prompts)"
    ]
    spec = TestSpec(runner="example-answers", prompts=[{"text": "x"}])
    assert runner.problems(spec, context(tmp_path)) == [
        "prompts[0]: needs a string 'prompt' (and optionally a string 'expect')"
    ]


class Receiver:
    """A tiny local webhook receiver: keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count:
            assert time.monotonic() < deadline, f"the receiver got {len(self.bodies)} of {count} events"
            time.sleep(0.02)
        return self.bodies


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    found = Receiver()
    monkeypatch.setenv(ENV, found.url)
    yield found
    found.server.shutdown()
    found.server.server_close()


def test_the_event_sink_posts_every_event_to_the_webhook(plugins, receiver: Receiver) -> None:  # noqa: ANN001
    sent = check_event_sink(plugins.emit)  # never blocks, never raises
    bodies = receiver.wait_for(len(sent))
    assert [(body["deployment"], body["kind"], body["reason"]) for body in bodies] == [
        (event.deployment, event.kind, event.reason) for event in sent
    ]


def test_the_plugin_is_loaded_from_its_entry_point_with_its_hook_api_range(agent_plugins) -> None:  # noqa: ANN001
    rows = {row.name: row for row in agent_plugins(builtins=True).info()}
    assert rows["example"].status == "loaded" and rows["example"].hook_api == ">=1.0,<2"
    assert rows["example"].distribution == "vllm-agent-plugin-example 0.1.0"
    assert set(rows["example"].providers) == {"health:example-served-model", "tests:example-answers"}
