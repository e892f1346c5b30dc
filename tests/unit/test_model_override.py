"""`vllm-agent start NAME --model M`: the deployment file gets the model, validated like the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from vllm_agent.config.deployfile import set_model
from vllm_agent.config.directory import load_config
from vllm_agent.errors import ConfigError

FILE = '# my notes stay\nmodel = "org/old"\nport = 18001  # pinned\n\n[health]\ninterval = 5\n'


def config_with(tmp_path: Path, text: str = FILE):  # noqa: ANN201
    (tmp_path / "models.d").mkdir(parents=True, exist_ok=True)
    (tmp_path / "agent.toml").write_text(f'state_dir = "{tmp_path / "state"}"\n')
    (tmp_path / "models.d" / "m.toml").write_text(text)
    return load_config(tmp_path)


def test_the_model_line_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    config = config_with(tmp_path)
    deployment = set_model(config, "m", "Qwen/Qwen2.5-0.5B-Instruct")
    assert deployment.model == "Qwen/Qwen2.5-0.5B-Instruct" and deployment.port == 18001
    text = (tmp_path / "models.d" / "m.toml").read_text()
    assert text == FILE.replace('"org/old"', '"Qwen/Qwen2.5-0.5B-Instruct"')
    assert load_config(tmp_path).deployment("m").model == "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.mark.parametrize("model", ["not a model", "relative/path/too/deep", "org/na\nme", ""])
def test_a_bad_model_is_one_line_naming_file_and_key_and_changes_nothing(tmp_path: Path, model: str) -> None:
    config = config_with(tmp_path)
    with pytest.raises(ConfigError) as raised:
        set_model(config, "m", model)
    assert raised.value.message.startswith("models.d/m.toml: model:")
    assert (tmp_path / "models.d" / "m.toml").read_text() == FILE


def test_start_with_a_bad_model_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    config_with(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "vllm_agent", "--config-dir", str(tmp_path), "start", "m", "--model", "no good"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "models.d/m.toml: model:" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "models.d" / "m.toml").read_text() == FILE
