"""Which files of a Hub repository the engine needs.

vLLM loads a model from its config, tokenizer, generation config, chat template and one set of
weights. A repository often carries more: ``*.bin`` twins of the safetensors, an ``original/``
checkpoint, ONNX or Flax exports. Fetching them doubles the download for nothing, so only the
engine's files are taken: safetensors when the repository has them, ``*.bin`` only when it has
none. A deployment adds its own patterns with ``include_files``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

# Top-level files the engine or its tokenizer may read (configs, tokenizers, chat templates,
# remote code for trust_remote_code models).
SUPPORT_PATTERNS = ("*.json", "*.jinja", "*.model", "*.tiktoken", "*.txt", "*.py")
SAFETENSORS = ("*.safetensors", "*.safetensors.index.json")
PYTORCH_BIN = ("*.bin", "*.bin.index.json")


def select_files(names: Iterable[str], include: Sequence[str] = ()) -> list[str]:
    """The repository files to download, sorted: top-level support files, one weight format,
    and every file that one of ``include`` matches (fnmatch, ``*`` crosses ``/``). Nothing in a
    folder (``original/``, ``onnx/``) is taken unless ``include`` asks for it."""
    names = sorted(set(names))
    top = [name for name in names if "/" not in name]
    has_safetensors = any(fnmatchcase(name, "*.safetensors") for name in top)
    weights, other_weights = (SAFETENSORS, PYTORCH_BIN) if has_safetensors else (PYTORCH_BIN, SAFETENSORS)
    chosen = set()
    for name in top:
        if _matches(name, weights):
            chosen.add(name)
        elif _matches(name, SUPPORT_PATTERNS) and not _matches(name, other_weights):
            chosen.add(name)
    chosen.update(name for name in names if _matches(name, include))
    return sorted(chosen)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)
