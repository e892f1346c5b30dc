"""The ``backend`` fixture: each contract test runs against the fake and the real user manager."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from unit_backends import Backend, FakeBackend, SystemdBackend
from vllm_agent.systemd import connect


@pytest.fixture(params=["fake", "systemd"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "fake":
        backend: Backend = FakeBackend()
    else:
        user_manager = request.getfixturevalue("user_manager")
        backend = SystemdBackend(user_manager, await connect(user=True, liveness_interval=0.1))
    yield backend
    await backend.close()
