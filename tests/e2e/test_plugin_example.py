"""The example third-party plugin (examples/vllm-agent-plugin-example, installed by scripts/setup)
in real use: a deployment under a real unit uses its health strategy and its post-start test
runner, and the real daemon (vllm-agent.service) posts the deployment's events to a webhook
through its event sink."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from harness.agent_cli import AgentCli
from harness.processes import wait_for

EVENTS: list[dict] = []


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        EVENTS.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook(agent: AgentCli, user_manager) -> Iterator[list[dict]]:  # noqa: ANN001
    """A local receiver; the daemon gets its URL through a drop-in, as an operator would set it."""
    EVENTS.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dropin = user_manager.unit_dir / "vllm-agent.service.d"
    dropin.mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{server.server_address[1]}/events"
    (dropin / "webhook.conf").write_text(f"[Service]\nEnvironment=VLLM_AGENT_EXAMPLE_WEBHOOK={url}\n")
    user_manager.daemon_reload()
    yield EVENTS
    user_manager.systemctl("stop", "vllm-agent.service", check=False)
    shutil.rmtree(dropin)
    user_manager.daemon_reload()
    server.shutdown()
    server.server_close()


def test_a_deployment_uses_the_example_plugins_check_runner_and_event_sink(
    agent: AgentCli,
    model_dir: Path,
    user_manager,
    webhook: list[dict],  # noqa: ANN001
) -> None:
    plugins = {row["name"]: row for row in json.loads(agent.ok("plugins", "--json").stdout)["plugins"]}
    assert plugins["example"]["status"] == "loaded", plugins.get("example")
    user_manager.systemctl("start", "vllm-agent.service")
    wait_for("the daemon ready", lambda: "daemon ready" in agent.log("vllm-agent"), timeout=60)

    agent.write_deployment(
        "ex",
        f'model = "{model_dir}"\nargs = ["--fake-load-time", "0.3"]\n'
        '[health]\nchecks = ["http", "example-served-model"]\ninterval = 1\n'
        '[[tests]]\nrunner = "example-answers"\nprompts = [{ prompt = "Hello" }, { prompt = "Bye" }]\n',
    )
    agent.ok("start", "ex", timeout=180)

    saved = json.loads((agent.state_dir / "deployments" / "ex.json").read_text())
    tests = {test["name"]: test for test in saved["tests"]}
    assert set(tests) == {"example-answers[0]", "example-answers[1]"} and all(t["ok"] for t in tests.values())

    def served_model_check() -> dict | None:
        health = json.loads((agent.state_dir / "deployments" / "ex.json").read_text()).get("health", [])
        return next((c for c in health if c.get("name") == "example-served-model" and c.get("ok")), None)

    wait_for("a passed example-served-model health check", served_model_check, timeout=60)
    wait_for(
        "the 'ready' event at the webhook",
        lambda: any(e["deployment"] == "ex" and e["kind"] == "ready" for e in webhook),
        timeout=60,
    )
