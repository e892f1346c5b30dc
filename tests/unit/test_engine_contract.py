"""The engine contract (tests/harness/engine_contract.py) against the fake engine.

The same checks run against real vLLM in tests/vllm/test_engine_contract.py, so what these prove
of the fake holds of vLLM 0.32 too. One fake serves every check of this module, in order; the
last one kills its EngineCore.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from harness import engine_contract as contract
from harness.fake_engine import SCRIPT
from harness.ports import PortLease


def fake_argv(port: int) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--model",
        "/models/tiny",
        *contract.serve_args(port),
        "--fake-load-time",
        "2",  # long enough to watch it load
        "--fake-max-output-tokens",
        "40",
        "--fake-token-latency",
        "0.05",  # a long generation to stop in the middle
    ]


@pytest.fixture(scope="module")
def run() -> Iterator[contract.EngineRun]:
    lease = PortLease()
    engine = contract.start(fake_argv(lease.port), lease, timeout=30)
    yield engine
    engine.close()


@pytest.fixture
def engine_argv() -> Iterator[list[str]]:
    with PortLease() as lease:  # held: an engine that refuses its flags never binds
        yield fake_argv(lease.port)


@pytest.fixture
def engine_env() -> None:
    return None


class TestFakeEngine(contract.EngineContract):
    pass
