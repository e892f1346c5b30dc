"""Model directories on disk, laid out exactly as the tools that make them do: safetensors as the
format defines it, Git LFS pointers as git writes them, and the Hugging Face cache as
huggingface_hub writes it (blobs named by sha256 for LFS files, by git blob sha1 for the rest)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

LLAMA_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
LFS_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")  # what .gitattributes puts in LFS on the Hub


def safetensors_bytes(tensors: dict[str, int], *, data_bytes: int | None = None, fill: bytes = b"\0") -> bytes:
    """u64 header length, JSON header, then the tensor bytes (``data_bytes`` to cut or pad them)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, size in tensors.items():
        header[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    body = (fill * (offset // len(fill) + 1))[: offset if data_bytes is None else data_bytes]
    return struct.pack("<Q", len(raw)) + raw + body


def lfs_pointer(data: bytes) -> bytes:
    """What a clone without git-lfs leaves in place of ``data`` (git-lfs spec v1)."""
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


def model_files(shards: int = 1, shard_bytes: int = 64) -> dict[str, bytes]:
    """config, tokenizer and safetensors weights (with an index when there is more than one)."""
    files = {
        "config.json": json.dumps(LLAMA_CONFIG).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE"}}).encode(),
        "tokenizer_config.json": b"{}",
    }
    if shards == 1:
        files["model.safetensors"] = safetensors_bytes({"w": shard_bytes}, fill=b"\x01")
        return files
    weight_map = {}
    for number in range(1, shards + 1):
        name = f"model-{number:05d}-of-{shards:05d}.safetensors"
        files[name] = safetensors_bytes({f"layer{number}": shard_bytes}, fill=bytes([number]))
        weight_map[f"layer{number}"] = name
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


def write_dir(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def sha256sums(path: Path) -> Path:
    """``sha256sum *`` output for every file in ``path``, as SHA256SUMS."""
    lines = [
        f"{hashlib.sha256(file.read_bytes()).hexdigest()}  {file.name}"
        for file in sorted(path.iterdir())
        if file.is_file() and file.name != "SHA256SUMS"
    ]
    (path / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return path / "SHA256SUMS"


def blob_name(name: str, data: bytes) -> str:
    """The Hub's ETag: sha256 for LFS files, the git blob sha1 for the rest."""
    if name.endswith(LFS_FILES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def hf_cache_model(
    hub: Path, repo: str, files: dict[str, bytes], *, commit: str = "1" * 40, refs: tuple[str, ...] = ("main",)
) -> Path:
    """``hub/models--ORG--NAME``: blobs/, refs/REF holding the commit, snapshots/COMMIT/* as
    relative symlinks into blobs/. Returns the snapshot directory."""
    storage = hub / f"models--{repo.replace('/', '--')}"
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (storage / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    for name, data in files.items():
        blob = storage / "blobs" / blob_name(name, data)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = len(Path(name).parts) + 1  # snapshots/COMMIT/[sub/]name -> ../../[../]blobs
        link.symlink_to(Path(*([".."] * depth)) / "blobs" / blob.name)
    return snapshot
