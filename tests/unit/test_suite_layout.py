"""The suite's own layout: test modules are imported by their base name (pytest's default
"prepend" mode, no packages), so two files of one name in different tiers shadow each other and
a whole-suite run fails to collect, although each tier alone passes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_name_is_unique_across_tiers() -> None:
    modules = [path for path in TESTS.glob("*/test_*.py")]
    twice = {name: n for name, n in Counter(path.name for path in modules).items() if n > 1}
    assert not twice, f"rename one of each: {sorted(twice)}"
