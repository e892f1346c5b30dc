"""Deployment names, unit names and model ids: checked before anything is written."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from ..errors import InvalidModelId, InvalidName

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
UNIT_TEMPLATE = "vllm@.service"
UNIT_PREFIX = "vllm@"
UNIT_SUFFIX = ".service"
# Hugging Face repo ids: "org/name", each part word characters, dots and dashes, at most 96.
_HF_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
HF_ID_RE = re.compile(rf"{_HF_PART}/{_HF_PART}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid deployment name, else raise InvalidName."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = repr(name) if isinstance(name, str) else type(name).__name__
        raise InvalidName(
            f"invalid deployment name {shown}: use 1 to 64 characters of [a-z0-9._-], starting with a letter or digit",
            hint="names become the instance of vllm@NAME.service, e.g. 'llama-3-8b'",
        )
    return name


def model_id_problem(model: str) -> str | None:
    """Why ``model`` is not a Hugging Face id (org/name) nor a clean absolute path, or None."""
    if not isinstance(model, str) or not model:
        return "must be a Hugging Face id 'org/name' or an absolute path, got an empty value"
    if _CONTROL.search(model):
        return "must not contain control characters"
    if model.startswith("/"):
        parts = PurePosixPath(model).parts
        if any(p in ("..", ".") for p in model.split("/")) or "//" in model:
            return f"must be a normalised absolute path without '.' or '..', got {model!r}"
        if len(parts) < 2:
            return f"must name a directory below '/', got {model!r}"
        return None
    if HF_ID_RE.fullmatch(model) and ".." not in model and "--" not in model:
        return None
    return f"must be a Hugging Face id 'org/name' or an absolute path, got {model!r}"


def check_model_id(model: str) -> str:
    problem = model_id_problem(model)
    if problem:
        raise InvalidModelId(f"model: {problem}", hint="e.g. 'Qwen/Qwen2.5-0.5B-Instruct' or '/srv/models/llama'")
    return model


def is_path_model(model: str) -> bool:
    return model.startswith("/")


def unit_name(name: str) -> str:
    return f"{UNIT_PREFIX}{check_name(name)}{UNIT_SUFFIX}"


def name_from_unit(unit: str) -> str | None:
    """The deployment name of ``vllm@NAME.service``, or None for any other unit."""
    if unit.startswith(UNIT_PREFIX) and unit.endswith(UNIT_SUFFIX):
        name = unit[len(UNIT_PREFIX) : -len(UNIT_SUFFIX)]
        return name if NAME_RE.fullmatch(name) else None
    return None
