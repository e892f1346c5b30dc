"""Drive the real `vllm-agent` command against a private user manager, as an operator would."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]  # tests/harness/ -> repo
FAKE_ENGINE = REPO / "agent" / "testing" / "fake_vllm"
AGENT = Path(sys.executable).parent / "vllm-agent"


def write_tiny_model_dir(path: Path) -> Path:
    """A directory the local source accepts: config, one small valid safetensors, tokenizer."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    (path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}}}))
    (path / "tokenizer_config.json").write_text("{}")
    return path


@dataclass
class AgentCli:
    config_dir: Path
    env: dict[str, str]
    log_dir: Path
    state_dir: Path

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(AGENT), "--user", "--config-dir", str(self.config_dir), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, (
            f"vllm-agent {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
        return done

    def status(self, name: str) -> dict[str, Any]:
        done = self.run("status", name, "--json")
        assert done.returncode in (0, 3), done.stderr
        return json.loads(done.stdout)["deployments"][0]

    def model_file(self, name: str) -> Path:
        return self.config_dir / "models.d" / f"{name}.toml"

    def write_deployment(self, name: str, text: str) -> Path:
        path = self.model_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def agent_toml(*, unit_dir: Path, state_dir: Path, log_dir: Path, ports: tuple[int, int], socket: Path) -> str:
    return (
        f"port_range = [{ports[0]}, {ports[1]}]\n"
        f'unit_dir = "{unit_dir}"\nstate_dir = "{state_dir}"\nlog_dir = "{log_dir}"\nsocket = "{socket}"\n'
        f"[engine]\ncommand = [{json.dumps(sys.executable)}, {json.dumps(str(FAKE_ENGINE))}]\n"
        "[restart]\nmax_restarts = 1\nmin_delay = 0.2\n"
        "[startup]\ntimeout = 60\n"
        # Health settings a starved 2-core machine holds: a check may take seconds, and one
        # slow round is not a failure (tests that need faster detection set their own).
        "[health]\ninterval = 1\ntimeout = 3\nfailure_threshold = 3\n"
    )


def agent_env(manager_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **manager_env}
    env.pop("VLLM_AGENT_CONFIG_DIR", None)
    return env
