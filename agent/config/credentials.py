"""Secrets: files in the credentials directory, handed to units as systemd credentials
(LoadCredential=), never in Environment= or on a command line. One reader for all of them."""

from __future__ import annotations

from pathlib import Path

CREDENTIALS = ("hf_token", "api_key")


def read_credential(directory: Path | str | None, name: str) -> str | None:
    """The credential's text without surrounding whitespace; None when absent, empty or unreadable.

    ``directory``: the config's credentials directory, or $CREDENTIALS_DIRECTORY inside a unit.
    """
    if not directory:
        return None
    try:
        return (Path(directory) / name).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None
