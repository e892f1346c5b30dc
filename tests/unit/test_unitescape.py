"""The one escaping function for unit-file values and sd_notify text.

What systemd makes of these lines is proven against a real user manager in
tests/systemd/test_render_hostile.py; here: what must be refused, and the cases where a naive
quote would change the meaning (a lone `;`, an empty word, specifiers, variables, a trailing
backslash).
"""

from __future__ import annotations

import pytest
from vllm_agent.render.escape import UnsafeValue, env_assignment, exec_line, exec_word, notify_text, plain, refused_char

REFUSED = ["\n", "\r", "\0", "\t", "\x1b", "\x7f", "\x85", "\ufffe", "\U0010ffff", "\ufdd0", "\ud800"]


@pytest.mark.parametrize("char", REFUSED)
def test_control_characters_noncharacters_and_surrogates_are_refused_everywhere(char: str) -> None:
    value = f"a{char}b"
    assert refused_char(value) == char
    for write in (exec_word, lambda v: env_assignment("X", v), lambda v: plain(v, "what")):
        with pytest.raises(UnsafeValue):
            write(value)


def test_the_error_names_the_value_and_the_character_in_one_line() -> None:
    with pytest.raises(UnsafeValue) as caught:
        plain("/srv/x\ry", "agent.toml: log_dir")
    line = caught.value.one_line()
    assert "\n" not in line and "\r" not in line
    assert "agent.toml: log_dir" in line and "U+000D" in line


@pytest.mark.parametrize("text", ["plain", "tab-free unicode: é 漢 \u2028", "100% $HOME"])
def test_printable_text_is_accepted(text: str) -> None:
    assert refused_char(text) is None


def test_exec_words_double_specifiers_and_variables_and_quote_what_systemd_would_split() -> None:
    assert exec_word("--port") == "--port"
    assert exec_word("100%") == "100%%"
    assert exec_word("$HOME") == '"$$HOME"'
    assert exec_word("a b") == '"a b"'
    assert exec_word('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'


def test_a_lone_semicolon_and_an_empty_word_stay_words() -> None:
    # Unquoted, a lone ";" would start a second command; an empty word would vanish.
    assert exec_line(["/bin/x", ";", "", "a;"]) == '/bin/x ";" "" "a;"'


def test_environment_assignments_are_quoted_only_when_needed() -> None:
    assert env_assignment("CUDA_VISIBLE_DEVICES", "0,1") == "CUDA_VISIBLE_DEVICES=0,1"
    assert env_assignment("NOTE", 'a "b" 5% \\') == '"NOTE=a \\"b\\" 5%% \\\\"'
    assert env_assignment("EMPTY", "") == "EMPTY="
    with pytest.raises(UnsafeValue):
        env_assignment("BAD NAME", "x")


@pytest.mark.parametrize("value", ["ends with a backslash\\", " leading", "trailing "])
def test_plain_values_systemd_would_change_are_refused(value: str) -> None:
    with pytest.raises(UnsafeValue):
        plain(value, "Description")


def test_plain_values_escape_specifiers() -> None:
    assert plain("/srv/50%/x.log", "log_dir") == "/srv/50%%/x.log"


def test_notify_text_is_one_printable_line_within_its_limit() -> None:
    text = notify_text("engine said:\nREADY=1\rMAINPID=1\0 \x1b[31mred\ufffe" + "x" * 1000)
    assert "\n" not in text and "\r" not in text and "\0" not in text and "\x1b" not in text
    assert "\ufffe" not in text and len(text) == 400
    assert text.startswith("engine said: READY=1 MAINPID=1")
