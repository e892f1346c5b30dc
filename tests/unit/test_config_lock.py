"""The config directory's lock: concurrent writers never give two deployments one port."""

from __future__ import annotations

import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from vllm_agent.config.deployfile import assign_port, create
from vllm_agent.config.directory import load_config
from vllm_agent.config.lock import config_lock
from vllm_agent.errors import ConfigError


def _ports(config_dir: Path) -> dict[str, int]:
    return {
        file.stem: tomllib.loads(file.read_text()).get("port")
        for file in sorted((config_dir / "models.d").glob("*.toml"))
    }


def _directory(tmp_path: Path, count: int) -> Path:
    config_dir = tmp_path / "conf"
    (config_dir / "models.d").mkdir(parents=True)
    (config_dir / "agent.toml").write_text("port_range = [22400, 22499]\n")
    for index in range(count):
        (config_dir / "models.d" / f"d{index}.toml").write_text('model = "org/model"\n')
    return config_dir


def test_writers_that_loaded_the_same_view_still_get_distinct_ports(tmp_path: Path) -> None:
    # Each writer loaded the directory before any port was written: a decision from that view
    # alone gives all of them the lowest port.
    config_dir = _directory(tmp_path, 6)
    views = [load_config(config_dir) for _ in range(6)]
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def assign(index: int) -> None:
        try:
            barrier.wait()
            assign_port(views[index], views[index].deployments[f"d{index}"])
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=assign, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    ports = _ports(config_dir)
    assert None not in ports.values()
    assert len(set(ports.values())) == 6, ports


def test_concurrent_processes_give_every_deployment_its_own_port(tmp_path: Path) -> None:
    config_dir = _directory(tmp_path, 5)
    script = (
        "import sys; from pathlib import Path\n"
        "from vllm_agent.config.directory import load_config\n"
        "from vllm_agent.config.deployfile import assign_port\n"
        "config = load_config(Path(sys.argv[1])); sys.stdin.readline()\n"
        "assign_port(config, config.deployments[sys.argv[2]])\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(config_dir), f"d{i}"], stdin=subprocess.PIPE, text=True)
        for i in range(5)
    ]
    for writer in writers:  # all have loaded the directory; go
        assert writer.stdin is not None
        writer.stdin.write("\n")
        writer.stdin.flush()
    for writer in writers:
        assert writer.wait(timeout=60) == 0
    assert len(set(_ports(config_dir).values())) == 5, _ports(config_dir)


def test_an_explicit_port_of_another_deployment_is_refused_and_nothing_written(tmp_path: Path) -> None:
    config_dir = _directory(tmp_path, 1)
    (config_dir / "models.d" / "d0.toml").write_text('model = "org/model"\nport = 22410\n')
    config = load_config(config_dir)
    with pytest.raises(ConfigError, match=r"models.d/new.toml: port: 22410 is already the port of models.d/d0.toml"):
        create(config, "new", {"model": "org/model", "port": 22410})
    assert not (config_dir / "models.d" / "new.toml").exists()


def test_a_held_lock_makes_another_process_wait_then_fail_with_a_clear_error(tmp_path: Path) -> None:
    config_dir = _directory(tmp_path, 0)
    script = (
        "import sys; from pathlib import Path\n"
        "from vllm_agent.config.lock import config_lock, ConfigLocked\n"
        "try:\n"
        "    with config_lock(Path(sys.argv[1]), wait=0.3): print('got it')\n"
        "except ConfigLocked as err: print(err.one_line())\n"
    )
    with config_lock(config_dir):
        with config_lock(config_dir):  # re-entrant in one process
            blocked = subprocess.run([sys.executable, "-c", script, str(config_dir)], capture_output=True, text=True)
    assert blocked.stdout.startswith("error[config.locked]: ") and str(config_dir) in blocked.stdout
    free = subprocess.run([sys.executable, "-c", script, str(config_dir)], capture_output=True, text=True)
    assert free.stdout.strip() == "got it"
