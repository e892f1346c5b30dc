"""Unit names are checked before anything reaches systemd, as systemd would check them."""

from __future__ import annotations

import pytest
from vllm_agent.errors import InvalidUnitName
from vllm_agent.systemd import check_unit_name


@pytest.mark.parametrize(
    "unit",
    ["vllm@llama-3-8b.service", r"a-b_c:d.e\x2d@in@st.service", "x.target", "a" * 247 + ".service"],
)
def test_names_systemd_accepts_pass(unit: str) -> None:
    assert check_unit_name(unit) == unit


@pytest.mark.parametrize(
    "unit",
    [
        "no-suffix",
        "spaces in.service",
        "a.unknowntype",
        "@x.service",
        "a/b.service",
        "",
        "a" * 248 + ".service",
        "vllm@.service",  # a template: its instances are units, it is not
    ],
)
def test_names_systemd_refuses_raise_invalid_unit_name(unit: str) -> None:
    with pytest.raises(InvalidUnitName) as raised:
        check_unit_name(unit)

    assert "invalid unit name" in raised.value.message and raised.value.hint
