"""Test harnesses that run real things: a private systemd user manager."""

from .user_manager import (
    LONG_LIVED_CHILDREN,
    UserManager,
    UserManagerError,
    user_manager_available,
)

__all__ = ["LONG_LIVED_CHILDREN", "UserManager", "UserManagerError", "user_manager_available"]
