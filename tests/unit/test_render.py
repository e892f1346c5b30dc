"""The drop-in is the whole truth systemd runs: engine command, restart policy, no secrets."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from vllm_agent.config.directory import Config, deployment_from_data, load_config
from vllm_agent.config.schema import AgentSettings
from vllm_agent.render.dropin import hash_of, render
from vllm_agent.render.escape import UnsafeValue


def make_config(tmp_path: Path, **settings: object) -> Config:
    return Config(path=tmp_path / "conf", user=True, settings=AgentSettings(**settings))


def deployment(config: Config, **data: object):
    return deployment_from_data("llama", {"model": "org/llama", "port": 8123, **data}, config.settings)


def exec_start(text: str) -> list[str]:
    line = [item for item in text.splitlines() if item.startswith("ExecStart=") and item != "ExecStart="][0]
    return shlex.split(line.removeprefix("ExecStart=").replace("$$", "$").replace("%%", "%"))


def test_engine_command_line_is_the_documented_one(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    rendered = render(
        config,
        deployment(config, max_model_len=256, tensor_parallel_size=2, args=["--enforce-eager"]),
        command=["/opt/va/bin/vllm-agent"],
    )
    argv = exec_start(rendered.text)
    assert argv[:6] == ["/opt/va/bin/vllm-agent", "--user", "--config-dir", str(tmp_path / "conf"), "launch", "llama"]
    engine = argv[argv.index("--") + 1 :]
    assert engine == [
        "vllm",
        "serve",
        "--model",
        "org/llama",
        "--served-model-name",
        "llama",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "256",
        "--enforce-eager",
    ]


def test_restart_policy_maps_onto_systemd(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    text = render(
        config, deployment(config, restart={"max_restarts": 4, "window": 90, "min_delay": 3}), command=["va"]
    ).text
    for line in (
        "Restart=always",
        "RestartSec=3s",
        "StartLimitIntervalSec=90s",
        "StartLimitBurst=5",
        "RestartPreventExitStatus=78",
        "KillMode=mixed",
        "Type=notify",
    ):
        assert line in text.splitlines()


def test_the_hash_changes_with_the_deployment_and_only_then(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    first = render(config, deployment(config), command=["va"])
    again = render(config, deployment(config), command=["va"])
    changed = render(config, deployment(config, max_model_len=512), command=["va"])
    assert first.hash == again.hash == hash_of(first.text)
    assert f"Environment=VLLM_AGENT_HASH={first.hash}" in first.text
    assert changed.hash != first.hash


def test_specials_in_values_are_quoted_for_systemd(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    text = render(
        config, deployment(config, args=["--chat-template", "{{ 100% $HOME }}"], env={"NOTE": "a b%"}), command=["va"]
    ).text
    assert exec_start(text)[-2:] == ["--chat-template", "{{ 100% $HOME }}"]
    assert 'Environment="NOTE=a b%%"' in text


def test_credentials_are_loaded_never_put_in_the_environment(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hf_token").write_text("hf_secret_value")
    config = make_config(tmp_path, credentials_dir=creds)
    text = render(config, deployment(config), command=["va"]).text
    assert f"LoadCredential=hf_token:{creds}/hf_token" in text
    assert "Environment=HF_TOKEN_PATH=%d/hf_token" in text
    assert "hf_secret_value" not in text
    assert "api_key" not in text  # absent credentials are not named: LoadCredential would fail


def test_log_dir_sends_output_to_a_file(tmp_path: Path) -> None:
    config = make_config(tmp_path, log_dir=tmp_path / "logs")
    text = render(config, deployment(config), command=["va"]).text
    assert f"StandardOutput=append:{tmp_path}/logs/llama.log" in text


def test_the_hash_does_not_depend_on_where_vllm_agent_is_installed(tmp_path: Path) -> None:
    # A CLI and a daemon from different installs must agree, or they keep restarting the unit.
    config = make_config(tmp_path)
    venv = render(config, deployment(config), command=["/opt/venv/bin/vllm-agent"])
    module = render(config, deployment(config), command=["/usr/bin/python3", "-m", "vllm_agent"])
    assert venv.text != module.text
    assert venv.hash == module.hash
    elsewhere = render(make_config(tmp_path / "other"), deployment(config), command=["/opt/venv/bin/vllm-agent"])
    assert elsewhere.hash != venv.hash  # the config directory is part of the deployment


def test_a_relative_config_dir_is_written_absolute(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    config = Config(path=Path("conf"), user=True, settings=AgentSettings())
    argv = exec_start(render(config, deployment(config), command=["/va"]).text)
    assert argv[argv.index("--config-dir") + 1] == str(tmp_path / "conf")


def test_a_lone_semicolon_and_an_empty_argument_stay_arguments(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    text = render(config, deployment(config, args=["--x", ";", "--y", ""]), command=["va"]).text
    line = [item for item in text.splitlines() if item.startswith("ExecStart=") and item != "ExecStart="][0]
    assert line.endswith(' --x ";" --y ""')


def test_values_that_would_add_a_line_are_refused_not_written(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with pytest.raises(UnsafeValue, match="gpus"):
        render(config, deployment(config), command=["va"], visible_devices=["0\nExecStartPre=/bin/evil"])
    with pytest.raises(UnsafeValue, match="--config-dir"):
        render(make_config(tmp_path / "a\rb"), deployment(config), command=["va"])
    with pytest.raises(UnsafeValue, match="unit directive"):
        render(config, deployment(config), command=["va"], directives={"Service": ["Nice=5\nUser=root"]})


def test_credentials_in_the_config_directory_are_loaded_by_default(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "credentials").mkdir(parents=True)
    (conf / "credentials" / "api_key").write_text("sk-sentinel")
    (conf / "models.d").mkdir()
    (conf / "models.d" / "llama.toml").write_text('model = "org/llama"\nport = 8123\n')
    config = load_config(conf, user=True)  # agent.toml does not name a credentials_dir
    text = render(config, config.deployment("llama"), command=["va"]).text
    assert f"LoadCredential=api_key:{conf}/credentials/api_key" in text.splitlines()
    assert "sk-sentinel" not in text
