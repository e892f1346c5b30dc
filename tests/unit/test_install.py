"""`vllm-agent init` writes units that run this very installation, per scope."""

from __future__ import annotations

from pathlib import Path

from vllm_agent.cli.install import install_units, system_dropins, unit_text
from vllm_agent.config.directory import Config
from vllm_agent.config.schema import AgentSettings


def test_system_units_keep_the_packaged_shape_but_run_this_install() -> None:
    text = unit_text("vllm@.service", user=False, command=["/opt/va/bin/vllm-agent"])
    assert "ExecStart=/opt/va/bin/vllm-agent --config-dir %E/vllm-agent launch %i" in text
    assert "WantedBy=multi-user.target" in text and "RestartPreventExitStatus=78" in text


def test_user_units_pass_user_and_the_config_dir(tmp_path: Path) -> None:
    text = unit_text("vllm-agent.service", user=True, command=["/opt/va/bin/vllm-agent"], config_dir=tmp_path)
    assert f"ExecStart=/opt/va/bin/vllm-agent --user --config-dir {tmp_path} run" in text
    assert "WantedBy=default.target" in text and "WatchdogSec=" in text


def test_install_writes_only_what_changed(tmp_path: Path) -> None:
    config = Config(path=tmp_path / "conf", user=True, settings=AgentSettings(unit_dir=tmp_path / "units"))
    first = install_units(config, command=["/opt/va/bin/vllm-agent"])
    assert sorted(path.name for path in first) == ["vllm-agent-gateway.service", "vllm-agent.service", "vllm@.service"]
    assert install_units(config, command=["/opt/va/bin/vllm-agent"]) == []
    assert (tmp_path / "conf" / "models.d").is_dir()


def test_gateway_unit_runs_the_gateway_of_this_installation(tmp_path: Path) -> None:
    text = unit_text("vllm-agent-gateway.service", user=True, command=["/opt/va/bin/vllm-agent"], config_dir=tmp_path)
    assert f"ExecStart=/opt/va/bin/vllm-agent --user --config-dir {tmp_path} gateway" in text
    assert "Type=notify" in text and "WatchdogSec=" in text and "WantedBy=default.target" in text


def test_system_init_runs_engines_as_the_service_user_in_a_sandbox(tmp_path: Path) -> None:
    """The system scope gets the drop-in with User=vllm and the sandbox; a user manager, which
    cannot switch users, never does."""
    system = Config(path=tmp_path / "conf", user=False, settings=AgentSettings(unit_dir=tmp_path / "system"))
    dropins = system_dropins(system, lookup=lambda name: {"vllm": object()}[name])
    written = install_units(system, command=["/opt/va/bin/vllm-agent"], dropins=dropins)
    dropin = tmp_path / "system" / "vllm@.service.d" / "10-system.conf"
    assert dropin in written
    lines = dropin.read_text().splitlines()
    sandbox = ("User=vllm", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "PrivateTmp=yes")
    for line in sandbox:
        assert line in lines
    user = Config(path=tmp_path / "uconf", user=True, settings=AgentSettings(unit_dir=tmp_path / "user"))
    install_units(user, command=["/opt/va/bin/vllm-agent"])
    assert not (tmp_path / "user" / "vllm@.service.d").exists()


def test_system_init_without_the_service_user_keeps_engines_startable(tmp_path: Path) -> None:
    """No vllm user (a pip install, not the package): no User=vllm drop-in that would fail
    every start with 217/USER."""
    system = Config(path=tmp_path / "conf", user=False, settings=AgentSettings(unit_dir=tmp_path / "system"))

    def nobody(name: str) -> object:
        raise KeyError(name)

    assert system_dropins(system, lookup=nobody) == ()
    install_units(system, command=["/opt/va/bin/vllm-agent"], dropins=system_dropins(system, lookup=nobody))
    assert not (tmp_path / "system" / "vllm@.service.d").exists()
