"""Test harnesses that run real things: a private systemd user manager; the fake vLLM engine
(``harness.fake_engine``, imported from there)."""

from vllm_agent.testing.user_manager import (
    LONG_LIVED_CHILDREN,
    UserManager,
    UserManagerError,
    user_manager_available,
)

__all__ = ["LONG_LIVED_CHILDREN", "UserManager", "UserManagerError", "user_manager_available"]
