"""The daemon's reconcile: one deployment that systemd refuses never stops the others, and
becomes that deployment's reason."""

from __future__ import annotations

from pathlib import Path

from harness.agent_cli import AgentCli
from harness.processes import wait_for


def test_a_masked_unit_and_a_rejected_drop_in_do_not_stop_the_others(
    agent: AgentCli,
    model_dir: Path,
    user_manager,  # noqa: ANN001
) -> None:
    for name in ("good", "masked", "broken"):
        agent.write_deployment(name, f'model = "{model_dir}"\nargs = ["--fake-load-time", "0.3"]\n')
    user_manager.systemctl("mask", "vllm@masked.service")
    # An operator's drop-in that empties ExecStart=: systemd refuses to load the unit.
    broken = user_manager.unit_dir / "vllm@broken.service.d"
    broken.mkdir(parents=True)
    (broken / "99-operator.conf").write_text("[Service]\nExecStart=\n")
    try:
        user_manager.systemctl("start", "vllm-agent.service")
        wait_for("good ready", lambda: agent.status("good")["state"] == "ready", timeout=60)
        masked = wait_for("masked's reason", lambda: (row := agent.status("masked"))["reason"] and row)
        assert masked["state"] == "stopped" and "systemd refused to start it" in masked["reason"]
        assert "masked" in masked["reason"]
        rejected = wait_for("broken's reason", lambda: (row := agent.status("broken"))["reason"] and row)
        assert "systemd refused to start it" in rejected["reason"]
        daemon = user_manager.show("vllm-agent.service", "ActiveState", "NRestarts")
        assert daemon == {"ActiveState": "active", "NRestarts": "0"}
        assert agent.run("status").returncode == 3  # two need an operator
    finally:
        user_manager.systemctl("unmask", "vllm@masked.service", check=False)
