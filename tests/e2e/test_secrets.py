"""Secrets in CONFIG_DIR/credentials reach the engine, and nothing else that anyone can read.

agent.toml names no credentials_dir: the README's default, CONFIG_DIR/credentials, must be
used. Unique sentinel values show where the secrets go: the engine on 0.0.0.0 demands the key,
a [[tests]] script that asks for it gets it, one that does not ask never sees it, and the values
appear in none of systemctl show, the drop-in, any process's command line, the logs,
`status --json` or the state files.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import httpx
from harness.agent_cli import AgentCli
from harness.processes import descendants, wait_for

ASKS = """#!{python}
import os, sys, urllib.request
request = urllib.request.Request(os.environ["VLLM_AGENT_URL"] + "/v1/models")
request.add_header("Authorization", "Bearer " + os.environ["VLLM_API_KEY"])
with urllib.request.urlopen(request) as answer:
    sys.exit(0 if answer.status == 200 else 1)
"""
DOES_NOT_ASK = """#!/bin/sh
if [ -n "${VLLM_API_KEY+set}" ]; then echo "VLLM_API_KEY was passed without api_key = true"; exit 1; fi
echo "no key here, as asked"
"""


def test_credentials_reach_the_engine_and_nothing_else(agent: AgentCli, model_dir: Path, user_manager) -> None:  # noqa: ANN001
    api_key, hf_token = f"sk-sentinel-{uuid.uuid4().hex}", f"hf_sentinel{uuid.uuid4().hex}"
    credentials = agent.config_dir / "credentials"
    credentials.mkdir()
    (credentials / "api_key").write_text(api_key + "\n")
    (credentials / "hf_token").write_text(hf_token + "\n")
    assert "credentials_dir" not in (agent.config_dir / "agent.toml").read_text()
    tests_d = agent.config_dir / "tests.d"
    tests_d.mkdir()
    for name, body in (("asks.py", ASKS.format(python=sys.executable)), ("does-not-ask.sh", DOES_NOT_ASK)):
        (tests_d / name).write_text(body)
        (tests_d / name).chmod(0o755)
    agent.write_deployment(
        "keyed",
        f'model = "{model_dir}"\nhost = "0.0.0.0"\nargs = ["--fake-load-time", "0.3"]\n'
        '[[tests]]\nrunner = "openai-smoke"\n'
        '[[tests]]\nrunner = "script"\npath = "asks.py"\napi_key = true\n'
        '[[tests]]\nrunner = "script"\npath = "does-not-ask.sh"\n',
    )
    user_manager.systemctl("start", "vllm-agent.service")  # the daemon too: its log, its status answer

    agent.ok("start", "keyed")  # ready only if all three post-start tests passed

    status = agent.status("keyed")
    assert status["state"] == "ready"
    models = f"{status['url']}/v1/models"
    assert httpx.get(models, timeout=5).status_code == 401  # on 0.0.0.0, the engine demands the key
    assert httpx.get(models, headers={"Authorization": f"Bearer {api_key}"}, timeout=5).status_code == 200
    saved = json.loads((agent.state_dir / "deployments" / "keyed.json").read_text())
    outcomes = {test["name"]: test for test in saved["tests"]}
    assert outcomes["asks.py"]["ok"] and outcomes["does-not-ask.sh"]["ok"], outcomes
    wait_for("the daemon's answer", lambda: json.loads(agent.ok("status", "--json").stdout)["source"] == "daemon")

    launcher = status["pid"]
    places = {
        "systemctl show": user_manager.systemctl("show", "vllm@keyed.service").stdout,
        "the drop-in": (user_manager.unit_dir / "vllm@keyed.service.d" / "50-vllm-agent.conf").read_text(),
        "status --json": agent.ok("status", "--json").stdout + agent.ok("status", "keyed", "--json").stdout,
    }
    for pid in {launcher, *descendants(launcher)}:
        places[f"/proc/{pid}/cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    for root in (agent.log_dir, agent.state_dir):
        for file in root.rglob("*"):
            if file.is_file():
                places[str(file)] = file.read_text(errors="replace")
    assert len([place for place in places if place.startswith("/proc/")]) >= 3  # launcher, server, EngineCore
    logs = [Path(place).name for place in places]
    assert "keyed.log" in logs and "vllm-agent.log" in logs
    assert "LoadCredential=api_key:" in places["the drop-in"]  # they went the way they should
    leaks = [place for place, text in places.items() if api_key in text or hf_token in text]
    assert leaks == []
