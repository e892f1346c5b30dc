"""Verification of a model directory, the way vLLM will read it, before any engine starts.

In order, each failure naming its file: config.json present and a transformers config; every
shard an index lists present; no Git LFS pointer in place of a weight file; weights present;
every safetensors header readable with its data offsets inside the file; a tokenizer (unless
--tokenizer points elsewhere); then every checksum the directory declares (verify_hashes).
The layout checks are cheap (names, small JSON files, the first bytes of each file); only the
checksums read whole files, and those are cached.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

from vllm_agent.errors import ModelNotFound, ModelSourceError
from vllm_agent.plugin_api import VerifiedModel
from vllm_agent.sizes import human_size

from .verify_hashes import HashCache, check_checksums, expected_checksums

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")  # what vLLM loads as weights
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")  # weights, stored in Git LFS on the Hub
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
NOT_WEIGHTS = {"training_args.bin", "optimizer.bin", "scheduler.bin"}
MAX_HEADER = 100 * 1024 * 1024  # safetensors itself refuses larger headers
LFS_MAGIC = b"version https://git-lfs.github.com/spec/"
LFS_POINTER_MAX = 1024  # pointer files are about 130 bytes; git-lfs reads at most 1024


def verify_model_dir(
    path: Path,
    *,
    tokenizer_elsewhere: bool = False,
    hint: str | None = None,
    cache: HashCache | None = None,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> VerifiedModel:
    """Every check above; raise ModelNotFound for a missing thing and ModelSourceError for a
    corrupt one. ``hint`` replaces the default advice on where the files should come from;
    ``force`` re-hashes files the cache already vouches for."""
    fix = hint or (
        "copy the complete model directory (config, weights, tokenizer) to this host, "
        "or correct `model` in models.d/NAME.toml"
    )
    if not path.exists():
        raise ModelNotFound(f"model directory {path} does not exist", hint=fix)
    if not path.is_dir():
        raise ModelNotFound(
            f"model path {path} is not a directory", hint="`model` must name the directory that holds config.json"
        )
    try:
        names = {entry.name for entry in path.iterdir()}
    except PermissionError:
        raise ModelSourceError(
            f"cannot read model directory {path}: permission denied",
            hint="the service user must be able to read it: chmod -R a+rX, or change its owner or group",
        ) from None
    _check_config(path / "config.json", fix)
    _check_shards(path, names, fix)
    _check_lfs_pointers(path, names)
    weights = _check_weights(path, names, fix)
    if not tokenizer_elsewhere and not names.intersection(TOKENIZER_FILES):
        raise ModelNotFound(
            f"model directory {path} has no tokenizer: none of {', '.join(TOKENIZER_FILES)}",
            hint=f"{fix}; or pass --tokenizer in args",
        )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if name in names:
            load_json(path / name)
    cache = cache or HashCache(None)
    try:
        hashes = check_checksums(expected_checksums(path), cache, progress=progress, force=force)
    except ModelSourceError:
        cache.record(path, ok=False)
        cache.save()
        raise
    cache.record(path, ok=True)
    cache.save()
    size = sum((path / name).stat().st_size for name in weights)
    summary = f"{len(weights)} weight file{'s' if len(weights) != 1 else ''}, {human_size(size)}"
    if hashes.checked:
        summary += f", {hashes.checked} checksum{'s' if hashes.checked != 1 else ''} ok"
    return VerifiedModel(
        path=path,
        summary=summary,
        weight_files=len(weights),
        size=size,
        checksums=hashes.checked,
        hashed=hashes.hashed,
        cached=hashes.cached,
    )


def _check_config(config: Path, fix: str) -> None:
    if not config.is_file():
        raise ModelNotFound(f"{config} is missing: vLLM reads the architecture from it", hint=fix)
    data = load_json(config)
    if not isinstance(data, dict) or not (data.get("model_type") or data.get("architectures")):
        raise ModelSourceError(
            f"{config} has neither 'model_type' nor 'architectures': it is not a transformers model config",
            hint="use the config.json that came with the model",
        )


def _check_shards(path: Path, names: set[str], fix: str) -> None:
    for index_name in WEIGHT_INDEXES:
        if index_name not in names:
            continue
        shards = _index_shards(path / index_name)
        missing = sorted(shard for shard in shards if not (path / shard).is_file())
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ModelNotFound(
                f"{path / index_name} lists {len(shards)} weight shards, {len(missing)} missing: {shown}",
                hint=f"{fix} (an interrupted copy or download?)",
            )


def _check_lfs_pointers(path: Path, names: set[str]) -> None:
    """A clone without git-lfs leaves ~130-byte text files where the weights should be."""
    for name in sorted(names):
        if not name.endswith(LFS_SUFFIXES):
            continue
        file = path / name
        try:
            size = file.stat().st_size
            if size > LFS_POINTER_MAX or not file.is_file():
                continue
            with file.open("rb") as stream:
                head = stream.read(len(LFS_MAGIC))
        except OSError:
            continue  # a dangling symlink or an unreadable file is reported by the checks that need it
        if head == LFS_MAGIC:
            raise ModelSourceError(
                f"{name} is a Git LFS pointer ({size} B): the weights were never fetched; run git lfs pull",
                hint=f"in {path}: `git lfs install && git lfs pull`, or copy the real files",
            )


def _check_weights(path: Path, names: set[str], fix: str) -> list[str]:
    weights = sorted(name for name in names if name.endswith(WEIGHT_SUFFIXES) and name not in NOT_WEIGHTS)
    weights = [name for name in weights if (path / name).is_file()]
    if not weights:
        raise ModelNotFound(
            f"model directory {path} has no weights: no *.safetensors, *.bin or *.gguf file",
            hint=fix,
        )
    for name in weights:
        if name.endswith(".safetensors"):
            check_safetensors(path / name)
    return weights


def _index_shards(index: Path) -> set[str]:
    data = load_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelSourceError(f"{index} has no 'weight_map'", hint="use the index file that came with the model")
    return {str(shard) for shard in weight_map.values()}


def check_safetensors(file: Path) -> None:
    """Check the header of a safetensors file: 8-byte length, JSON, offsets within the file.

    A truncated copy keeps its header but loses the end of the data, so the largest declared
    offset no longer fits: that is what this catches, without reading the tensors.
    """
    size = file.stat().st_size
    corrupt = f"{file} is corrupt or truncated"
    hint = "copy or download this file again and compare its size with the source"
    with file.open("rb") as stream:
        head = stream.read(8)
        if len(head) < 8:
            raise ModelSourceError(f"{corrupt}: {size} bytes, too short for a safetensors header", hint=hint)
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER or 8 + length > size:
            raise ModelSourceError(f"{corrupt}: header length {length} does not fit in {size} bytes", hint=hint)
        raw = stream.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelSourceError(f"{corrupt}: its header is not valid JSON ({err})", hint=hint) from None
    if not isinstance(header, dict):
        raise ModelSourceError(f"{corrupt}: its header is not a JSON object", hint=hint)
    data_size = size - 8 - length
    end = 0
    for tensor, info in header.items():
        if tensor == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ModelSourceError(f"{corrupt}: tensor {tensor!r} has no valid data_offsets", hint=hint)
        if offsets[0] > offsets[1]:
            raise ModelSourceError(f"{corrupt}: tensor {tensor!r} ends before it starts", hint=hint)
        end = max(end, offsets[1])
    if end > data_size:
        raise ModelSourceError(
            f"{corrupt}: its header declares {end} bytes of tensor data but the file holds {data_size}",
            hint=hint,
        )


def load_json(file: Path) -> object:
    try:
        with file.open("rb") as stream:
            return json.load(stream)
    except PermissionError:
        raise ModelSourceError(
            f"cannot read {file}: permission denied", hint="the service user must be able to read the model files"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelSourceError(
            f"{file} is not valid JSON ({err})", hint="copy this file again; it may be truncated or damaged"
        ) from None
