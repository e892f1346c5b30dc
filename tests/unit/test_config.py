"""Config files: every problem reported with file and key; bad input never half-accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vllm_agent.config.directory import load_config, load_one
from vllm_agent.config.paths import resolve_config_dir
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


HOSTILE_FIELDS = [
    ("env.NOTE", 'env = { NOTE = "a\\nExecStartPre=/bin/evil" }'),
    ("args[1]", 'args = ["--x", "a\\rb"]'),
    ("served_model_name", 'served_model_name = "tiny\\u0000"'),
    ("revision", 'revision = "main\\u007f"'),
    ("gpus[0]", 'gpus = ["GPU-1\\u0085"]'),
    ("engine.command[0]", '[engine]\ncommand = ["vllm\\u001b[31m"]'),
    ("tests[0].path", '[[tests]]\nrunner = "script"\npath = "a\\tb.sh"'),
    ("health.checks[0]", '[health]\nchecks = ["http\\r"]'),
]


@pytest.mark.parametrize(("key", "toml"), HOSTILE_FIELDS, ids=[key for key, _ in HOSTILE_FIELDS])
def test_control_characters_are_refused_in_every_field_naming_file_and_key(tmp_path: Path, key: str, toml: str) -> None:
    write(tmp_path, "models.d/m.toml", f'model = "org/m"\n{toml}\n')
    [line] = problems(tmp_path)
    assert line.startswith(f"models.d/m.toml: {key}: must not contain control characters")
    assert line.isprintable()  # one line, whatever the value held


def test_control_characters_in_agent_toml_and_in_keys_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "agent.toml", 'log_dir = "/var/log/x\\ny"\n')
    write(tmp_path, "models.d/m.toml", 'model = "org/m"\n"port\\r" = 1\n')
    found = problems(tmp_path)
    assert found[0].startswith("agent.toml: log_dir: must not contain control characters, found U+000A")
    assert found[1].startswith("models.d/m.toml: key 'port\\r' must not contain control characters")
    assert all(line.isprintable() for line in found)


@pytest.mark.parametrize(
    "spelling",
    [
        *("--api-key", "--api_key", "--api-key=sk", "--api_key=sk", "--api-k", "--api-key.x"),
        *("--hf-token", "--hf_token=hf", "--hf-tok"),
    ],
)
def test_secret_flags_are_refused_in_every_spelling_vllm_accepts(tmp_path: Path, spelling: str) -> None:
    write(tmp_path, "agent.toml", f'[engine]\ncommand = ["vllm", "serve", "{spelling}"]\n')
    write(tmp_path, "models.d/a.toml", f'model = "org/m"\nargs = ["{spelling}", "s3cret"]\n')
    write(tmp_path, "models.d/b.toml", f'model = "org/m"\n[engine]\ncommand = ["vllm", "serve", "{spelling}"]\n')
    found = problems(tmp_path)
    assert [line.split(": ", 2)[:2] for line in found] == [
        ["agent.toml", "engine.command"],
        ["models.d/a.toml", "args"],
        ["models.d/b.toml", "engine.command"],
    ]
    assert all("puts a secret on the command line" in line for line in found)


def test_flags_that_only_look_alike_are_accepted(tmp_path: Path) -> None:
    write(tmp_path, "models.d/m.toml", 'model = "org/m"\nargs = ["--api-server-count", "2", "--hf-overrides", "{}"]\n')
    assert load_config(tmp_path).deployment("m").args[0] == "--api-server-count"


def test_paths_systemd_would_ignore_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "agent.toml", 'credentials_dir = "/etc/vllm-agent/../secrets"\n')
    assert problems(tmp_path) == [
        "agent.toml: credentials_dir: must be a normalised path without '..', got '/etc/vllm-agent/../secrets'"
    ]


def test_the_credentials_directory_defaults_to_the_config_directorys_own(tmp_path: Path) -> None:
    assert load_config(tmp_path).settings.credentials_dir == tmp_path / "credentials"
    write(tmp_path, "agent.toml", 'credentials_dir = "/run/secrets/va"\n')
    assert load_config(tmp_path).settings.credentials_dir == Path("/run/secrets/va")


def test_a_relative_config_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VLLM_AGENT_CONFIG_DIR", raising=False)
    assert resolve_config_dir("conf", user=False) == tmp_path / "conf"
    monkeypatch.setenv("VLLM_AGENT_CONFIG_DIR", "rel/dir")
    assert resolve_config_dir(None, user=False) == tmp_path / "rel" / "dir"
