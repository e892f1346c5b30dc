"""Config files: every problem reported with file and key; bad input never half-accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vllm_agent.configdir import load_config, load_one
from vllm_agent.errors import ConfigError


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(root: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    return caught.value.problems


def test_a_good_directory_loads_with_defaults_from_agent_toml(tmp_path: Path) -> None:
    write(tmp_path, "agent.toml", "port_range = [9000, 9010]\n[health]\ninterval = 3\n[restart]\nmax_restarts = 5\n")
    write(tmp_path, "models.d/llama.toml", 'model = "meta-llama/Llama-3.1-8B"\n[health]\ntimeout = 2\n')
    config = load_config(tmp_path)
    llama = config.deployment("llama")
    assert config.settings.port_range == (9000, 9010)
    assert llama.health.interval == 3 and llama.health.timeout == 2  # inherited, then overridden
    assert llama.restart.max_restarts == 5
    assert llama.source_name == "hf" and llama.served_name == "llama"


def test_path_models_use_the_local_source(tmp_path: Path) -> None:
    write(tmp_path, "models.d/tiny.toml", 'model = "/srv/models/tiny"\n')
    assert load_config(tmp_path).deployment("tiny").source_name == "local"


def test_out_of_range_value_names_file_key_and_allowed_range(tmp_path: Path) -> None:
    write(tmp_path, "models.d/llama.toml", 'model = "org/m"\ngpu_memory_utilization = 1.5\n')
    assert problems(tmp_path) == ["models.d/llama.toml: gpu_memory_utilization: must be > 0 and <= 1, got 1.5"]


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    write(tmp_path, "models.d/llama.toml", 'model = "org/m"\nprot = 8000\n[health]\nintervall = 4\n')
    found = problems(tmp_path)
    assert "models.d/llama.toml: prot: unknown key; did you mean 'port'?" in found
    assert "models.d/llama.toml: health.intervall: unknown key; did you mean 'interval'?" in found


def test_every_broken_file_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "agent.toml", "port_range = [9000, 8000]\n")
    write(tmp_path, "models.d/a.toml", "model = \n")
    write(tmp_path, "models.d/b.toml", 'model = "../etc/passwd"\n')
    write(tmp_path, "models.d/c.toml", "port = 80\n")
    write(tmp_path, "models.d/Bad Name.toml", 'model = "org/m"\n')
    found = problems(tmp_path)
    assert any(p.startswith("agent.toml: port_range: must be [low, high]") for p in found)
    assert any(p.startswith("models.d/a.toml: invalid TOML") for p in found)
    assert any(p.startswith("models.d/b.toml: model: must be a Hugging Face id") for p in found)
    assert "models.d/c.toml: model: required key is missing" in found
    assert any(p.startswith("models.d/Bad Name.toml: the file name is not a valid deployment name") for p in found)
    assert len(found) == 5


@pytest.mark.parametrize(
    "model",
    ["../x", "", "org/name;rm -rf /", "/srv/../etc", "org/na\x07me", "relative/path/too/deep", "org//name"],
)
def test_bad_model_ids_are_refused(tmp_path: Path, model: str) -> None:
    write(tmp_path, "models.d/m.toml", f"model = {json.dumps(model)}\n")  # JSON strings are TOML strings
    found = problems(tmp_path)
    assert found and all(p.startswith("models.d/m.toml: model:") for p in found)


def test_secrets_are_refused_in_env_and_args(tmp_path: Path) -> None:
    write(tmp_path, "models.d/m.toml", 'model = "org/m"\nargs = ["--api-key", "x"]\n[env]\nHF_TOKEN = "hf_x"\n')
    found = problems(tmp_path)
    assert any("env: 'HF_TOKEN' looks like a secret" in p for p in found)
    assert any("args: --api-key puts a secret on the command line" in p for p in found)


def test_external_mode_needs_a_url(tmp_path: Path) -> None:
    write(tmp_path, "models.d/ext.toml", 'model = "org/m"\nmode = "external"\n')
    assert problems(tmp_path) == ["models.d/ext.toml: url: required when mode = 'external'"]


def test_wrong_types_say_what_is_expected(tmp_path: Path) -> None:
    write(tmp_path, "models.d/m.toml", 'model = "org/m"\nport = "eighty"\nmode = "auto"\n[[tests]]\ntimeout = 3\n')
    found = problems(tmp_path)
    assert "models.d/m.toml: port: must be an integer, got 'eighty'" in found
    assert any(
        p.startswith("models.d/m.toml: mode: must be one of 'managed', 'monitored' or 'external'") for p in found
    )
    assert "models.d/m.toml: tests[0].runner: required key is missing" in found


def test_load_one_ignores_other_broken_deployments(tmp_path: Path) -> None:
    write(tmp_path, "models.d/good.toml", 'model = "org/m"\n')
    write(tmp_path, "models.d/bad.toml", "oops")
    assert load_one(tmp_path, "good").deployment("good").model == "org/m"


def test_tests_left_out_means_the_default_smoke_and_an_empty_list_means_none(tmp_path: Path) -> None:
    write(tmp_path, "models.d/default.toml", 'model = "org/m"\n')
    write(tmp_path, "models.d/none.toml", 'model = "org/m"\ntests = []\n')
    config = load_config(tmp_path)
    assert config.deployment("default").tests is None
    assert config.deployment("none").tests == []
