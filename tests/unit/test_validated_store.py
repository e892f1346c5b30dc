"""A file validated once is read back without validation until it changes (config/validated.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from vllm_agent.config.directory import load_config
from vllm_agent.config.schema import AgentSettings, Deployment, TestSpec
from vllm_agent.config.validated import DIRECTORY

AGENT = 'state_dir = "{state}"\n[health]\ninterval = 7.0\n'
MODEL = 'model = "org/tiny"\nport = 8123\ngpus = [0, "GPU-abc"]\n[[tests]]\nrunner = "pytest"\npath = "tests.d/x.py"\n'


def config_dir(tmp_path: Path, model: str = MODEL) -> Path:
    conf = tmp_path / "conf"
    (conf / "models.d").mkdir(parents=True)
    (conf / "agent.toml").write_text(AGENT.format(state=tmp_path / "state"))
    (conf / "models.d" / "tiny.toml").write_text(model)
    return conf


def load_in_fresh_python(conf: Path) -> dict:
    """What a new process (a launcher, `status`) reads, and whether it needed pydantic."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from vllm_agent.config.directory import load_config\n"
        f"config = load_config(Path({str(conf)!r}), user=True)\n"
        "print(json.dumps({'pydantic': 'pydantic' in sys.modules,"
        " 'deployment': config.deployments['tiny'].as_json(), 'settings': config.settings.as_json()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_an_unchanged_file_is_read_back_without_pydantic_and_with_the_same_values(tmp_path: Path) -> None:
    conf = config_dir(tmp_path)
    first = load_in_fresh_python(conf)
    second = load_in_fresh_python(conf)
    assert first["pydantic"] is True  # validated the first time
    assert second["pydantic"] is False
    assert second["deployment"] == first["deployment"]
    assert second["settings"] == first["settings"]
    assert second["deployment"]["health"]["interval"] == 7.0  # inherited from agent.toml
    assert second["deployment"]["tests"][0]["options"] == {"path": "tests.d/x.py"}


def test_an_edited_file_is_validated_again(tmp_path: Path) -> None:
    conf = config_dir(tmp_path)
    load_in_fresh_python(conf)
    (conf / "models.d" / "tiny.toml").write_text(MODEL.replace("8123", "8124"))
    assert load_in_fresh_python(conf)["deployment"]["port"] == 8124
    # agent.toml's defaults reach every deployment: an edit there is an edit of each.
    (conf / "agent.toml").write_text(AGENT.format(state=tmp_path / "state").replace("7.0", "9.0"))
    edited = load_in_fresh_python(conf)
    assert edited["pydantic"] is True
    assert edited["deployment"]["health"]["interval"] == 9.0


def test_an_invalid_file_is_reported_every_time_and_never_kept(tmp_path: Path) -> None:
    conf = config_dir(tmp_path, model='model = "org/tiny"\nport = 0\n')
    for _ in range(2):
        problems: list[str] = []
        load_config(conf, user=True, problems=problems)
        assert problems == ["models.d/tiny.toml: port: must be >= 1, got 0"]
    assert not (tmp_path / "state" / DIRECTORY / "models.d" / "tiny.toml.json").exists()


def test_an_entry_anyone_else_could_have_written_is_not_trusted(tmp_path: Path) -> None:
    conf = config_dir(tmp_path)
    load_config(conf, user=True)
    entry = tmp_path / "state" / DIRECTORY / "models.d" / "tiny.toml.json"
    kept = json.loads(entry.read_text())
    # Same key, another value, written where a group member could have written it.
    kept["value"]["args"] = ["--served-model-name", "forged"]
    entry.write_text(json.dumps(kept))
    os.chmod(entry, 0o664)
    assert load_config(conf, user=True).deployments["tiny"].args == []
    # Rewritten by the loader, owner-only: a forged value with a matching key is still refused
    # when the directory is group-writable.
    entry.write_text(json.dumps(kept))
    os.chmod(entry, 0o644)
    os.chmod(entry.parent, 0o775)
    assert load_config(conf, user=True).deployments["tiny"].args == []


def test_the_values_survive_json_as_they_were_validated(tmp_path: Path) -> None:
    conf = config_dir(tmp_path)
    config = load_config(conf, user=True)
    deployment = config.deployments["tiny"]
    assert Deployment.from_json(json.loads(json.dumps(deployment.as_json()))) == deployment
    assert AgentSettings.from_json(json.loads(json.dumps(config.settings.as_json()))) == config.settings
    assert isinstance(config.settings.state_dir, Path)
    assert deployment.tests == [TestSpec(runner="pytest", path="tests.d/x.py")]


def test_values_built_in_code_are_checked_too() -> None:
    with pytest.raises(ValueError, match="port_range: must be \\[low, high\\]"):
        AgentSettings(port_range=(9000, 8000))
    with pytest.raises(ValueError, match="args: --api-key puts a secret on the command line"):
        Deployment(name="x", model="org/a", args=["--api-key", "k"])
