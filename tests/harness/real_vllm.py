"""Where real vLLM lives for the vllm tier, and the deployment file it runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # tests/harness/ -> repo
VLLM_VENV = Path(os.environ.get("VLLM_VENV") or REPO / ".vllm-venv")
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
MODEL_DIR = REPO / ".cache" / "tiny-llama"


def vllm_unavailable() -> str | None:
    if not VLLM_PYTHON.exists():
        return f"no vLLM venv at {VLLM_VENV}: run scripts/install-vllm"
    done = subprocess.run([str(VLLM_PYTHON), "-c", "import vllm"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return f"'import vllm' fails in {VLLM_VENV}: {done.stderr.strip().splitlines()[-1:]}"
    return None


def deployment_toml(model: Path, *, extra: str = "") -> str:
    return (
        f"model = {json.dumps(str(model))}\nmax_model_len = 256\n"
        'args = ["--enforce-eager", "--dtype", "bfloat16"]\n'
        '[env]\nHF_HUB_OFFLINE = "1"\nVLLM_CPU_KVCACHE_SPACE = "1"\n' + extra
    )
