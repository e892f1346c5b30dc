"""What an operator does on the booted machine, shared by the system tier's tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from booted import Machine

# distribution -> the python3 its root has, which that distribution's .deb's venv runs on.
DISTROS = {"debian12": "python3.11", "ubuntu2404": "python3.12"}
# For the checks that differ where the distribution does (its python3, systemd, polkit):
# install, deploy, polkit, lintian. The rest runs on Debian 12 (conftest's ``distro``).
on_every_distro = pytest.mark.parametrize("distro", list(DISTROS), indirect=True)

FAKE_ENGINE = "/src/agent/testing/fake_vllm"  # stdlib-only: runs on the machine's python3
MODEL = "/srv/models/tiny"


@dataclass(frozen=True)
class Packages:
    version: str
    deb: Path
    rpm: Path
    python: str  # the distribution's python3 the .deb's venv links to: python3.11, python3.12

    @property
    def deb_inside(self) -> str:
        """The .deb's path in a booted machine, which sees the session's builds at /dist."""
        return f"/dist/{self.deb.parent.name}/{self.deb.name}"


def install(machine: Machine, packages: Packages) -> None:
    machine.run("dpkg", "-i", packages.deb_inside, timeout=300)


def use_fake_engine(machine: Machine) -> None:
    """The fake vLLM as the engine, and a tiny model directory the vllm user can read."""
    engine = f'\n[engine]\ncommand = ["/usr/bin/python3", "{FAKE_ENGINE}"]\n'
    machine.run("sh", "-c", "cat >> /etc/vllm-agent/agent.toml", input=engine)
    files = {
        "config.json": json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}}}),
        "tokenizer_config.json": "{}",
    }
    for name, text in files.items():
        machine.write(f"{MODEL}/{name}", text)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
    machine.run(
        "python3",
        "-c",
        "import struct,sys; h=sys.argv[1].encode(); open(sys.argv[2],'wb').write(struct.pack('<Q',len(h))+h+bytes(8))",
        header,
        f"{MODEL}/model.safetensors",
    )


def http_status(machine: Machine, url: str) -> int | None:
    """GET url from inside; None when nothing answers (refused, reset)."""
    done = machine.run(
        "python3",
        "-c",
        "import sys,urllib.request,urllib.error\n"
        "try: print(urllib.request.urlopen(sys.argv[1], timeout=5).status)\n"
        "except urllib.error.HTTPError as e: print(e.code)\n"
        "except OSError: print('none')",
        url,
    )
    text = done.stdout.strip()
    return None if text == "none" else int(text)


def show(machine: Machine, unit: str, prop: str) -> str:
    return machine.run("systemctl", "show", "-P", prop, unit).stdout.strip()


def proc_user(machine: Machine, pid: int) -> str:
    return machine.run("stat", "-c", "%U", f"/proc/{pid}").stdout.strip()


def unit_pids(machine: Machine, unit: str) -> list[int]:
    cgroup = show(machine, unit, "ControlGroup")
    text = machine.run(
        "sh",
        "-c",
        f"cat /sys/fs/cgroup{cgroup}/cgroup.procs 2>/dev/null || cat /sys/fs/cgroup/systemd{cgroup}/cgroup.procs",
    ).stdout
    return [int(line) for line in text.split()]


def deployment(machine: Machine, name: str) -> dict:
    """`vllm-agent status NAME --json`: state, port, pid, desired, reason."""
    done = machine.run("vllm-agent", "status", name, "--json", check=False)
    assert done.returncode in (0, 3), done.stderr
    return json.loads(done.stdout)["deployments"][0]
