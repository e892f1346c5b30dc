"""API keys: files CREDENTIALS_DIR/gateway/NAME.toml, each with the key and what it may use.

    key = "sk-..."                 # the secret the client sends as `Authorization: Bearer ...`
    models = ["llama", "qwen-.*"]  # names or regular expressions (full match); ["*"]: every model
    max_concurrency = 8            # requests in flight at once; 0: no limit

No key files: the gateway asks for no key (it listens on 127.0.0.1 by default). Logs name a key
by its file name, never by its secret.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

KEYS_DIR = "gateway"


@dataclass
class Key:
    name: str
    models: tuple[str, ...]
    max_concurrency: int = 0
    in_flight: int = 0
    _patterns: list[re.Pattern[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._patterns = [re.compile(m) for m in self.models if m != "*"]

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models or any(p.fullmatch(model) for p in self._patterns)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass
class Keys:
    by_digest: dict[bytes, Key] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        return bool(self.by_digest)

    def find(self, authorization: bytes | None) -> Key | None:
        if not authorization or not authorization.startswith(b"Bearer "):
            return None
        return self.by_digest.get(hashlib.sha256(authorization[7:].strip()).digest())


def load_keys(credentials_dir: Path | None) -> Keys:
    """Every key file, validated; a bad one is a ConfigError naming the file and key."""
    directory = credentials_dir / KEYS_DIR if credentials_dir else None
    keys = Keys()
    if directory is None or not directory.is_dir():
        return keys
    problems: list[str] = []
    for file in sorted(directory.glob("*.toml")):
        label = str(file)
        try:
            data = tomllib.loads(file.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            problems.append(f"{label}: cannot read: {err}")
            continue
        problem = _problem(data)
        if problem:
            problems.append(f"{label}: {problem}")
            continue
        digest = _digest(data["key"])
        if digest in keys.by_digest:
            problems.append(f"{label}: key: the same secret as {keys.by_digest[digest].name}.toml")
            continue
        keys.by_digest[digest] = Key(file.stem, tuple(data["models"]), int(data.get("max_concurrency", 0)))
    if problems:
        raise ConfigError(problems, hint="fix the key files; each needs key, models and optionally max_concurrency")
    return keys


def _problem(data: dict) -> str | None:
    unknown = sorted(set(data) - {"key", "models", "max_concurrency"})
    if unknown:
        return f"{unknown[0]}: unknown key; allowed: key, models, max_concurrency"
    key = data.get("key")
    if not isinstance(key, str) or len(key.strip()) < 16 or key != key.strip():
        return "key: must be a string of at least 16 characters without surrounding spaces"
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        return 'models: must be a non-empty list of model names or patterns (["*"] for all)'
    for model in models:
        if model != "*":
            try:
                re.compile(model)
            except re.error as err:
                return f"models: {model!r} is not a valid regular expression: {err}"
    limit = data.get("max_concurrency", 0)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        return f"max_concurrency: must be an integer >= 0, got {limit!r}"
    return None
