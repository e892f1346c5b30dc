"""The one way a value reaches a unit file or an sd_notify message.

systemd (252) reads unit files line by line, and each directive in its own way:

- ExecStart= splits words with C-style quoting (``"..."``, ``\\\\``, ``\\"``), then expands
  ``%`` specifiers in each word, and at exec time ``$VAR``: so ``%`` becomes ``%%`` and ``$``
  becomes ``$$``. A lone unquoted ``;`` separates commands; an empty word needs ``""``.
- Environment= unquotes and C-unescapes the same way, then expands ``%`` (but not ``$``).
- Plain values (Description=, LoadCredential= and StandardOutput=append: paths) are taken
  as they are, but expand ``%``. A trailing backslash continues the line and trailing
  whitespace is stripped, so such values are refused.

Everywhere, a line end (``\\n`` and also ``\\r``) or any other control character would end or
corrupt the directive, and systemd refuses text that is not valid UTF-8 by its own rules
(which exclude the Unicode noncharacters such as U+FFFE), also on D-Bus. Those characters
are refused here, never silently dropped: a value that cannot be written exactly is an error.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from ..errors import AgentError

# Words that need no quotes once % and $ are doubled: nothing systemd would split or unescape.
_SAFE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_SEPARATORS = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


class UnsafeValue(AgentError):
    """A value that cannot be written into a unit file exactly."""

    code = "config.unsafe_value"
    exit_code = 2


def refused_char(text: str) -> str | None:
    """The first character that must never reach a unit file or sd_notify, or None.

    Control characters (Unicode Cc: NUL, line ends including CR, tab, ESC, DEL, C1), lone
    surrogates (not encodable) and noncharacters (U+FDD0..U+FDEF, U+xxFFFE, U+xxFFFF), which
    systemd's UTF-8 check rejects.
    """
    for char in text:
        if _refused(char):
            return char
    return None


def _refused(char: str) -> bool:
    code = ord(char)
    if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
        return True
    return unicodedata.category(char) in ("Cc", "Cs")


def describe_char(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def check(text: str, what: str) -> str:
    """``text`` if it holds no refused character, else UnsafeValue naming ``what``."""
    char = refused_char(text)
    if char is not None:
        raise UnsafeValue(
            f"{what}: must not contain control characters, found {describe_char(char)} in {text!r}",
            hint="unit files and status lines are line-based; remove it",
        )
    return text


def exec_word(word: str, what: str = "argument") -> str:
    """One ExecStart= word: specifiers and variables doubled, quoted unless plainly safe."""
    escaped = check(word, what).replace("%", "%%").replace("$", "$$")
    if _SAFE_WORD.fullmatch(escaped):
        return escaped
    # Inside quotes only the backslash and the quote are special; a quoted ";" is a plain word.
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_line(argv: Iterable[str], what: str = "ExecStart") -> str:
    """The value of ExecStart=: systemd reads it back as exactly ``argv``.

    The first word is the program: systemd reads a leading ``-@:+!`` of it as a flag, so it
    must be a path (absolute, as the callers give it).
    """
    return " ".join(exec_word(word, f"{what}[{index}]") for index, word in enumerate(argv))


def env_assignment(key: str, value: str, what: str | None = None) -> str:
    """The value of Environment= for one variable, read back as ``KEY=value`` exactly."""
    label = what or f"env.{key}"
    check(key, label)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise UnsafeValue(f"{label}: {key!r} is not a valid environment variable name")
    assignment = f"{key}={check(value, label)}".replace("%", "%%")
    if _SAFE_WORD.fullmatch(assignment):
        return assignment
    return '"' + assignment.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plain(text: str, what: str) -> str:
    """A value systemd takes verbatim but for specifiers: Description=, paths in LoadCredential=
    and StandardOutput=append:. Leading or trailing whitespace would be stripped and a trailing
    backslash would continue the line, so they are refused rather than changed."""
    check(text, what)
    if text != text.strip() or text.endswith("\\"):
        raise UnsafeValue(
            f"{what}: must not start or end with whitespace or end with a backslash, got {text!r}",
            hint="systemd would strip it or join the next line",
        )
    return text.replace("%", "%%")


def notify_text(text: str, limit: int = 400) -> str:
    """Text for an sd_notify field (STATUS=, from anywhere, the engine too): one line, printable,
    valid UTF-8 for systemd; line ends become spaces, other refused characters U+FFFD."""
    text = str(text).translate(_SEPARATORS)
    if refused_char(text) is not None:
        text = "".join("\ufffd" if _refused(char) else char for char in text)
    return text[:limit]
