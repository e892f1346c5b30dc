"""CI rules for prerequisites: outside CI a tier whose prerequisite is missing skips with the
reason; in CI the same is a failure, except for the few skips allowed below."""

from __future__ import annotations

import os
import re
from typing import NoReturn

import pytest

# Skips CI may have, each with why: CI machines have no GPU and no ROCm.
ALLOWED_IN_CI = (
    re.compile(r"real NVML variant: no usable NVIDIA driver"),
    re.compile(r"real amdsmi variant: amdsmi cannot be imported"),
)


def in_ci() -> bool:
    """Any non-empty CI value but false/0/no counts, as CI services set it."""
    return os.environ.get("CI", "").strip().lower() not in ("", "false", "0", "no")


def missing(reason: str) -> NoReturn:
    """A prerequisite is missing: skip with the reason, or fail in CI."""
    if in_ci():
        pytest.fail(f"CI needs this prerequisite: {reason}", pytrace=False)
    pytest.skip(reason)


def allowed_in_ci(reason: str) -> bool:
    return any(pattern.search(reason) for pattern in ALLOWED_IN_CI)
