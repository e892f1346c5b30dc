"""The vllm-agent command as an operator runs it (no systemd needed for these)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from vllm_agent.log import configure, for_deployment

AGENT = [sys.executable, "-m", "vllm_agent"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=60)


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("vllm-agent ")
    shown = run("--help").stdout
    for command in ("deploy", "start", "status", "validate", "plugins", "run", "test", "logs"):
        assert command in shown


def test_validate_reports_every_problem_with_file_and_key_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "models.d").mkdir()
    (tmp_path / "agent.toml").write_text("port_range = [1, 2, 3]\n")
    (tmp_path / "models.d" / "a.toml").write_text('model = "org/m"\ngpu_memory_utilization = 1.5\n')
    (tmp_path / "models.d" / "b.toml").write_text('model = "org/m"\nhealth = { checks = ["nope"] }\n')
    done = run("--config-dir", str(tmp_path), "validate")
    assert done.returncode == 2
    assert "models.d/a.toml: gpu_memory_utilization: must be > 0 and <= 1, got 1.5" in done.stderr
    assert "agent.toml: port_range" in done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(run("--config-dir", str(tmp_path), "validate", "--json").stdout)
    assert report["ok"] is False and len(report["problems"]) >= 2


def test_validate_finds_unknown_health_checks_and_port_clashes(tmp_path: Path) -> None:
    (tmp_path / "models.d").mkdir()
    (tmp_path / "models.d" / "a.toml").write_text('model = "org/m"\nport = 8100\n[health]\nchecks = ["htp"]\n')
    (tmp_path / "models.d" / "b.toml").write_text('model = "org/m"\nport = 8100\n')
    done = run("--config-dir", str(tmp_path), "validate")
    assert done.returncode == 2
    assert "models.d/a.toml: health.checks: no health strategy named 'htp'" in done.stderr
    assert "models.d/b.toml: port: 8100 is also used by models.d/a.toml" in done.stderr


def test_validate_names_gateway_routes_and_fallbacks_that_reach_no_deployment(tmp_path: Path) -> None:
    (tmp_path / "models.d").mkdir()
    (tmp_path / "agent.toml").write_text('[[gateway.routes]]\nmatch = "llama-.*"\nto = ["big"]\nfallback = ["smal"]\n')
    (tmp_path / "models.d" / "big.toml").write_text('model = "org/big"\nport = 8100\nfallback = ["tiny"]\n')
    (tmp_path / "models.d" / "small.toml").write_text('model = "org/small"\nport = 8101\naliases = ["tiny"]\n')
    (tmp_path / "models.d" / "odd.toml").write_text('model = "org/odd"\nport = 8102\nfallback = ["gone"]\n')
    done = run("--config-dir", str(tmp_path), "validate")
    assert done.returncode == 2
    unresolved = [line for line in done.stderr.splitlines() if "no deployment answers" in line]
    assert unresolved == [
        f"{tmp_path}/agent.toml: gateway.routes[0].fallback: no deployment answers to 'smal'",
        f"{tmp_path}/models.d/odd.toml: fallback: no deployment answers to 'gone'",
    ], done.stderr
    assert "big.toml" not in done.stderr  # its fallback is an alias of small: fine


def test_validate_passes_a_good_directory(tmp_path: Path) -> None:
    (tmp_path / "models.d").mkdir()
    (tmp_path / "models.d" / "llama.toml").write_text('model = "meta-llama/Llama-3.1-8B"\nport = 8100\n')
    done = run("--config-dir", str(tmp_path), "validate")
    assert done.returncode == 0 and "1 deployment(s)" in done.stdout


def test_plugins_lists_built_ins_and_blocking_removes_one(tmp_path: Path) -> None:
    shown = run("--config-dir", str(tmp_path), "plugins", "--json")
    names = {row["name"]: row for row in json.loads(shown.stdout)["plugins"]}
    assert {"local", "huggingface", "health", "tests_openai", "packer"} <= set(names)
    assert "health:completion" in names["health"]["providers"]
    (tmp_path / "agent.toml").write_text('[plugins]\nblock = ["tests_openai"]\n')
    blocked = json.loads(run("--config-dir", str(tmp_path), "plugins", "--json").stdout)
    assert "tests_openai" not in {row["name"] for row in blocked["plugins"]}
    assert blocked["blocked"] == ["tests_openai"]


def test_render_prints_the_drop_in_without_writing_anything(tmp_path: Path) -> None:
    (tmp_path / "models.d").mkdir()
    (tmp_path / "agent.toml").write_text(f'unit_dir = "{tmp_path / "units"}"\n')
    path = tmp_path / "models.d" / "llama.toml"
    path.write_text('model = "org/llama"\n')
    done = run("--config-dir", str(tmp_path), "render", "llama")
    assert done.returncode == 0 and "--port 8000" in done.stdout and "Restart=always" in done.stdout
    assert path.read_text() == 'model = "org/llama"\n' and not (tmp_path / "units").exists()


def test_unknown_deployment_is_one_line_with_a_hint(tmp_path: Path) -> None:
    done = run("--config-dir", str(tmp_path), "render", "ghost")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error[deployment.not_found]: no deployment 'ghost'")
    assert "hint:" in done.stderr


def test_logs_are_json_lines_with_a_journal_priority_and_the_deployment() -> None:
    stream = io.StringIO()
    configure(stream=stream)
    for_deployment("llama").error("engine died", status=1)
    line = stream.getvalue().strip()
    assert line.startswith("<3>{")
    record = json.loads(line[3:])
    assert record["deployment"] == "llama" and record["event"] == "engine died" and record["level"] == "error"


def test_config_dir_precedence_flag_then_environment_then_the_scopes_default(tmp_path: Path) -> None:
    def directory(name: str, count: int) -> Path:
        path = tmp_path / name
        (path / "models.d").mkdir(parents=True)
        for index in range(count):
            (path / "models.d" / f"m{index}.toml").write_text(f'model = "org/m"\nport = {8100 + index}\n')
        return path

    flag, env_dir, home = directory("flag", 1), directory("env", 2), tmp_path / "home"
    directory("home/.config/vllm-agent", 3)
    base = {"PATH": "/usr/bin:/bin", "HOME": str(home)}

    def validate(*args: str, **env: str) -> str:
        done = subprocess.run([*AGENT, *args, "validate"], capture_output=True, text=True, env=base | env, timeout=60)
        return done.stdout.strip()

    assert validate("--config-dir", str(flag), VLLM_AGENT_CONFIG_DIR=str(env_dir)) == f"ok: {flag} (1 deployment(s))"
    assert validate(VLLM_AGENT_CONFIG_DIR=str(env_dir)) == f"ok: {env_dir} (2 deployment(s))"
    user_default = home / ".config" / "vllm-agent"
    assert validate("--user") == f"ok: {user_default} (3 deployment(s))"
    # A relative --config-dir is made absolute: units and messages name the real place.
    done = subprocess.run(
        [*AGENT, "--config-dir", "flag", "validate"], capture_output=True, text=True, env=base, cwd=tmp_path, timeout=60
    )
    assert done.stdout.strip() == f"ok: {flag} (1 deployment(s))"
