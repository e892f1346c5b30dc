"""Hostile strings in every field of a deployment file, against the real user manager.

Hypothesis writes at least 1,000 deployment files whose fields hold what systemd treats
specially (specifiers, variables, quotes, backslashes, `;`, whitespace, non-ASCII) and, in some,
control characters. Each file either fails validation with one-line errors that name the file
and a key, writing nothing, or is rendered by the agent's own code path into a drop-in that
`systemd-analyze verify` accepts and whose ExecStart, Environment and LoadCredential, read back
from the manager over D-Bus, are exactly the intended values. A sample of them is started, so
the words and variables the process receives are checked too, after systemd's own expansion.

The config directory's own path is hostile as well: it is in ExecStart, LoadCredential= and
StandardOutput=append:.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sdbus
import tomli_w
from harness import UserManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vllm_agent.cli.install import install_units
from vllm_agent.config.directory import load_one
from vllm_agent.deployments.lifecycle import Deployments
from vllm_agent.errors import ConfigError
from vllm_agent.fsutil import write_atomic
from vllm_agent.pluginhost.manager import make_plugin_manager
from vllm_agent.render.dropin import Rendered, dropin_path, render
from vllm_agent.systemd import connect
from vllm_agent.systemd.interfaces import MANAGER_PATH, SYSTEMD_BUS_NAME, ManagerInterface

EXAMPLES = 1000
STARTED = 24  # examples whose unit is really started, to see the argv and environment it gets
AGENT = Path(sys.executable).parent / "vllm-agent"
CONFIG_DIR_NAME = "conf %n $HOME \"q\" 's' \\ ;#é"
SECRET_SPELLINGS = ["--api-key", "--api_key=sk", "--hf-token", "--hf_token=x", "--api-k", "--api-key.a"]

# What systemd treats specially somewhere, and text that only looks like an escape.
TOKENS = [
    *("%", "%n", "%%", "%i", "%d", "$", "$HOME", "${HOME}", "$$", "\\", "\\\\", '"', "'", "`id`"),
    *(";", " ; ", "\\;", "#", " ", "  ", "=", "\\n", "\\x41", "\\u0041", "a b", "--", "-", "@", ":", "*"),
    *("é", "漢", "😀", "\u2028", "\u200b", "\ufeff", "\u00a0", "\ufffe", "\U0010ffff", "\ufdd0"),
    *("..", "/", "-x", "+", "!", "|"),
]
CONTROL = ["\n", "\r", "\0", "\t", "\x1b", "\x7f", "\x85", "\x9b", "\r\n"]
FAKE_GPUS = 4  # devices of the fake GPU host (tests/plugins/fakegpu) that files may name


def fake_uuid(index: int) -> str:
    return f"GPU-00000000-0000-0000-0000-{index:012d}"


def pinned(gpus: list[Any]) -> str:
    """CUDA_VISIBLE_DEVICES for a file's ``gpus``: the agent pins by UUID."""
    return ",".join(item if isinstance(item, str) else fake_uuid(item) for item in gpus)


def forbidden(text: str) -> bool:
    """The spec: a control character (Unicode Cc, CR and NUL included) must never be accepted."""
    return any(unicodedata.category(char) == "Cc" for char in text)


_free_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=4)
PRINTABLE = st.lists(st.one_of(st.sampled_from(TOKENS), _free_text), max_size=6).map("".join)
WITH_CONTROL = st.tuples(PRINTABLE, st.sampled_from(CONTROL), PRINTABLE).map("".join)
FIELDS = ["model", "served_model_name", "revision", "args", "env", "env key", "gpus", "engine", "host"]
ENV_KEY = st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True)


@st.composite
def deployment_files(draw: st.DrawFn) -> dict[str, Any]:
    """One deployment file's table; at most one field carries control characters."""
    bad = draw(st.one_of(st.none(), st.none(), st.sampled_from(FIELDS)))

    def text(field: str, min_size: int = 0) -> str:
        value = draw(WITH_CONTROL if field == bad else PRINTABLE)
        return value if len(value) >= min_size else value + "x"

    data: dict[str, Any] = {
        # A Hugging Face id allows few characters: most hostile text goes into a path.
        "model": draw(st.sampled_from(["org/model", "/srv/models/" + text("model", 1)])),
    }
    if draw(st.booleans()):
        data["served_model_name"] = text("served_model_name", 1)
    if draw(st.booleans()):
        data["revision"] = text("revision", 1)
    data["args"] = [
        draw(st.sampled_from(SECRET_SPELLINGS)) if draw(st.integers(0, 20)) == 0 else text("args")
        for _ in range(draw(st.integers(0, 5)))
    ]
    env_keys = draw(st.lists(ENV_KEY, max_size=4, unique=True))
    data["env"] = {key: text("env") for key in env_keys}
    if bad == "env key":
        data["env"][text("env key", 1)] = "x"
    if draw(st.booleans()):
        # Devices of the fake host (FAKE_GPUS), each once, by index or by UUID; a small claim
        # each, so that hundreds of files naming the same devices still fit on them.
        indexes = draw(st.lists(st.integers(0, FAKE_GPUS - 1), min_size=1, max_size=3, unique=True))
        data["gpus"] = [draw(st.sampled_from([index, fake_uuid(index)])) for index in indexes]
        data["gpus"] += [text("gpus", 1)] if bad == "gpus" else []
        data["gpu_memory_utilization"] = 0.001
    if draw(st.booleans()):
        data["engine"] = {"command": [text("engine", 1) for _ in range(draw(st.integers(1, 3)))]}
    if bad == "host" or draw(st.integers(0, 5)) == 0:
        data["host"] = draw(st.sampled_from(["0.0.0.0", "::1", "localhost"])) if bad != "host" else text("host")
    data["tests"] = []
    return data


def strings_in(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [text for key, value in data.items() for text in (str(key), *strings_in(value))]
    if isinstance(data, list):
        return [text for item in data for text in strings_in(item)]
    return []


@dataclass
class Accepted:
    name: str
    data: dict[str, Any]
    rendered: Rendered

    @property
    def unit(self) -> str:
        return f"vllm@{self.name}.service"

    def environment(self) -> list[str]:
        """Environment= as intended: the agent's own variables, then the file's env, in order."""
        expected = [f"VLLM_AGENT_HASH={self.rendered.hash}", f"VLLM_AGENT_DEPLOYMENT={self.name}"]
        expected += [f"{key}={value}" for key, value in sorted(self.data["env"].items())]
        if "gpus" in self.data:
            expected += ["CUDA_DEVICE_ORDER=PCI_BUS_ID", f"CUDA_VISIBLE_DEVICES={pinned(self.data['gpus'])}"]
        return expected


SERVICE = "org.freedesktop.systemd1.Service"


async def service_property(bus: Any, path: str, name: str) -> Any:
    """One property of the Service interface, as the manager holds it (the agent never needs
    these, so the client does not declare them)."""
    reply = await bus.call_async(bus.new_property_get_message(SYSTEMD_BUS_NAME, path, SERVICE, name))
    return reply.get_contents()[1]


@pytest.fixture
def hostile_config(user_manager: UserManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    conf = tmp_path / CONFIG_DIR_NAME
    # Files may name GPUs: give the host some (tests/plugins/fakegpu), for placement here and
    # for the `vllm-agent validate` this test runs.
    gpus = tmp_path / "fake-gpus.json"
    gpus.write_text(json.dumps({"count": FAKE_GPUS}))
    monkeypatch.setenv("VLLM_AGENT_FAKE_GPUS", str(gpus))
    (conf / "models.d").mkdir(parents=True)
    (conf / "credentials").mkdir()
    (conf / "credentials" / "api_key").write_text("sk-not-used-here\n")
    settings_table = {
        "unit_dir": str(user_manager.unit_dir),
        "state_dir": str(tmp_path / "state"),
        "log_dir": str(conf / "logs %i"),
        "port_range": [20000, 29999],
    }
    (conf / "agent.toml").write_text(tomli_w.dumps(settings_table))
    yield conf
    user_manager.stop_all("vllm@*")
    for dropins in user_manager.unit_dir.glob("vllm@*.service.d"):
        for file in dropins.iterdir():
            file.unlink()
        dropins.rmdir()
    user_manager.systemctl("reset-failed", check=False)
    user_manager.daemon_reload()


async def test_hostile_deployment_files_are_refused_or_reach_systemd_exactly(
    user_manager: UserManager, hostile_config: Path, tmp_path: Path
) -> None:
    conf = hostile_config
    agent_config = config_of(conf)
    plugins = make_plugin_manager(agent_config.settings)
    units = await connect(user=True)
    accepted: list[Accepted] = []
    refused: dict[str, str] = {}  # name -> the file's text, which must stay as it was
    numbers = itertools.count()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(deployment_files())
    def validate_and_write(data: dict[str, Any]) -> None:
        number = next(numbers)
        name = f"h{number}"
        data = {**data, "port": 20000 + number}
        file = conf / "models.d" / f"{name}.toml"
        text = tomli_w.dumps(data)
        file.write_text(text)
        try:
            config = load_one(conf, name, user=True)
        except ConfigError as err:
            assert err.problems
            for line in err.problems:
                assert line.isprintable(), f"not one printable line: {line!r}"
                assert line.startswith(f"models.d/{name}.toml: "), line
                key = line.removeprefix(f"models.d/{name}.toml: ").split(": ", 1)[0]
                root = key.split(".")[0].split("[")[0]
                assert root in data or key.startswith("key "), f"no key of the file named: {line!r}"
            assert file.read_text() == text and not dropin_path(agent_config, name).exists()
            refused[name] = text
            return
        assert not any(forbidden(item) for item in strings_in(data)), f"accepted a control character: {data!r}"
        assert not set(data["args"]) & set(SECRET_SPELLINGS), f"accepted a secret flag: {data['args']!r}"
        prepared = Deployments(config, units, plugins, command=[str(AGENT)]).prepare(name)
        argv = prepared.rendered.argv
        engine = list(argv[argv.index("--") + 1 :])
        assert argv[0] == str(AGENT) and argv[argv.index("--config-dir") + 1] == str(conf)
        assert engine[len(engine) - len(data["args"]) :] == data["args"]
        assert engine[engine.index("--served-model-name") + 1] == data.get("served_model_name", name)
        accepted.append(Accepted(name, data, prepared.rendered))

    try:
        install_units(agent_config, command=[str(AGENT)])
        validate_and_write()
        assert len(accepted) + len(refused) >= EXAMPLES
        # Both outcomes must be exercised, or the property says little.
        assert len(accepted) >= EXAMPLES // 5 and len(refused) >= EXAMPLES // 10, (len(accepted), len(refused))
        check_validate_cli(user_manager, conf, set(refused))
        check_nothing_written_for_refused(user_manager, conf, refused)
        await units.reload()
        check_systemd_analyze_verify(user_manager, accepted)
        await check_read_back(accepted, conf)
        await check_started(user_manager, units, accepted, conf, tmp_path)
    finally:
        await units.close()


def config_of(conf: Path):  # noqa: ANN201 - Config
    return load_one(conf, "none", user=True)


def check_validate_cli(user_manager: UserManager, conf: Path, refused: set[str]) -> None:
    """The operator's `vllm-agent validate` names exactly the refused files, one line each."""
    # Accepted files may name GPUs: the fake ones of hostile_config ($VLLM_AGENT_FAKE_GPUS).
    done = subprocess.run(
        [str(AGENT), "--user", "--config-dir", str(conf), "validate", "--json"],
        env={**os.environ, **user_manager.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    named = set()
    for problem in json.loads(done.stdout)["problems"]:
        assert problem.isprintable() and problem.startswith("models.d/h"), problem
        named.add(problem.removeprefix("models.d/").split(".toml: ", 1)[0])
    assert named == refused


def check_nothing_written_for_refused(user_manager: UserManager, conf: Path, refused: dict[str, str]) -> None:
    """`vllm-agent start` of a refused file stops at validation: no drop-in, the file unchanged."""
    for name in sorted(refused)[:3]:
        done = subprocess.run(
            [str(AGENT), "--user", "--config-dir", str(conf), "start", name, "--no-wait"],
            env={**os.environ, **user_manager.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert any(line.startswith(f"error[config.invalid]: models.d/{name}.toml: ") for line in lines), lines
        assert not (user_manager.unit_dir / f"vllm@{name}.service.d").exists()
        assert (conf / "models.d" / f"{name}.toml").read_text() == refused[name]


def check_systemd_analyze_verify(user_manager: UserManager, accepted: list[Accepted]) -> None:
    """systemd's own linter reads template + drop-in per instance and has nothing to say."""
    paths = [str(user_manager.unit_dir / example.unit) for example in accepted]
    for start in range(0, len(paths), 250):
        done = subprocess.run(
            ["systemd-analyze", "--user", "verify", *paths[start : start + 250]],
            env={**os.environ, "XDG_RUNTIME_DIR": str(user_manager.runtime_dir)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = (done.stdout + done.stderr).strip()
        assert done.returncode == 0 and not output, output[-3000:]


async def check_read_back(accepted: list[Accepted], conf: Path) -> None:
    """ExecStart, Environment and LoadCredential as the manager holds them, over D-Bus."""
    bus = sdbus.sd_bus_open_user()
    manager: Any = ManagerInterface.new_proxy(SYSTEMD_BUS_NAME, MANAGER_PATH, bus)
    credential = [("api_key", str(conf / "credentials" / "api_key"))]
    try:
        for example in accepted:
            path = await manager.load_unit(example.unit)
            [command] = await service_property(bus, path, "ExecStart")
            # systemd keeps "$$" until exec time, when it becomes "$" (checked by check_started).
            stored = [word.replace("$", "$$") for word in example.rendered.argv]
            assert (command[0], command[1]) == (stored[0], stored), example.data
            assert await service_property(bus, path, "Environment") == example.environment(), example.data
            assert [tuple(item) for item in await service_property(bus, path, "LoadCredential")] == credential
    finally:
        bus.close()


DUMPER = """\
import json, os, socket, sys
name = sys.argv[sys.argv.index("launch") + 1]
with open(os.path.join({out!r}, name + ".tmp"), "w") as handle:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ)}}, handle)
os.rename(os.path.join({out!r}, name + ".tmp"), os.path.join({out!r}, name + ".json"))
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
"""


async def check_started(
    user_manager: UserManager, units: Any, accepted: list[Accepted], conf: Path, tmp_path: Path
) -> None:
    """Start a sample of the units with a program that records the argv and environment it
    got: after systemd's `$$` and specifier expansion they are exactly the intended ones."""
    out = tmp_path / "dumps"
    out.mkdir()
    dumper = tmp_path / "dump_argv.py"
    dumper.write_text(DUMPER.format(out=str(out)))
    specials = [example for example in accepted if any(c in json.dumps(example.data) for c in "$%\\\"';")]
    sample = (specials or accepted)[:STARTED]
    config = config_of(conf)
    started = []
    for example in sample:
        deployment = load_one(conf, example.name, user=True).deployment(example.name)
        devices = pinned(example.data["gpus"]).split(",") if "gpus" in example.data else None
        rendered = render(config, deployment, command=[sys.executable, str(dumper)], visible_devices=devices)
        unit_name = f"x{example.name}"
        write_atomic(dropin_path(config, unit_name), rendered.text)
        started.append((example, rendered, f"vllm@{unit_name}.service"))
    await units.reload()
    try:
        for _, _, unit in started:
            user_manager.systemctl("start", "--no-block", unit)
        deadline = time.monotonic() + 60
        while len(list(out.glob("*.json"))) < len(started) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for example, rendered, unit in started:
            dump = out / f"{example.name}.json"
            assert dump.exists(), f"{unit} did not run: {user_manager.systemctl('status', unit, check=False).stdout}"
            got = json.loads(dump.read_text())
            assert got["argv"] == list(rendered.argv[2:]), example.data
            for key, value in example.data["env"].items():
                assert got["env"][key] == value, (key, example.data)
            assert got["env"]["VLLM_AGENT_DEPLOYMENT"] == example.name
    finally:
        for _, _, unit in started:
            user_manager.systemctl("stop", unit, check=False)
