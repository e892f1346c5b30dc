"""Model source "local": a model directory on this host is checked before any unit starts."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from vllm_agent.config.schema import Deployment
from vllm_agent.errors import ModelNotFound, ModelSourceError
from vllm_agent_plugins.source_local import LocalModelSource, check_model_dir


def write_safetensors(path: Path, tensors: dict[str, int], *, data_bytes: int | None = None) -> None:
    """A real safetensors layout: u64 header length, JSON header, then the tensor bytes."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, size in tensors.items():
        header[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (offset if data_bytes is None else data_bytes))


def make_model(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    write_safetensors(path / "model.safetensors", {"embed": 64, "lm_head": 64})
    (path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    (path / "tokenizer_config.json").write_text("{}")
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "tiny-llama")


async def resolve(path: Path, args: list[str] | None = None) -> tuple[object, list[str]]:
    lines: list[str] = []
    deployment = Deployment(name="tiny", model=str(path), args=args or [])
    resolved = await LocalModelSource().resolve(deployment, lines.append)
    return resolved, lines


async def test_a_complete_model_directory_resolves_to_itself(model: Path) -> None:
    resolved, lines = await resolve(model)
    assert resolved.path == model
    assert str(model) in resolved.description and "1 weight file" in resolved.description
    assert lines == [f"checking model directory {model}"]


async def test_a_missing_directory_is_named_with_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelNotFound) as caught:
        await resolve(missing)
    assert f"model directory {missing} does not exist" in caught.value.message
    assert "models.d/NAME.toml" in caught.value.hint


def test_a_file_instead_of_a_directory_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelNotFound, match="is not a directory"):
        check_model_dir(tmp_path / "model.gguf")


def test_missing_config_json_is_named(model: Path) -> None:
    (model / "config.json").unlink()
    with pytest.raises(ModelNotFound) as caught:
        check_model_dir(model)
    assert f"{model / 'config.json'} is missing" in caught.value.message
    assert "copy the complete model directory" in caught.value.hint


def test_config_json_that_is_not_json_is_reported_as_damaged(model: Path) -> None:
    (model / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ModelSourceError) as caught:
        check_model_dir(model)
    assert f"{model / 'config.json'} is not valid JSON" in caught.value.message
    assert "truncated" in caught.value.hint


def test_config_without_model_type_or_architectures_is_rejected(model: Path) -> None:
    (model / "config.json").write_text(json.dumps({"hidden_size": 128}))
    with pytest.raises(ModelSourceError, match="neither 'model_type' nor 'architectures'"):
        check_model_dir(model)


def test_a_directory_without_weights_says_which_formats_count(model: Path) -> None:
    (model / "model.safetensors").unlink()
    (model / "training_args.bin").write_bytes(b"not weights")
    with pytest.raises(ModelNotFound) as caught:
        check_model_dir(model)
    assert f"model directory {model} has no weights" in caught.value.message
    assert "*.safetensors, *.bin or *.gguf" in caught.value.message


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model-q4.gguf"])
def test_bin_and_gguf_weights_are_accepted(model: Path, name: str) -> None:
    (model / "model.safetensors").unlink()
    (model / name).write_bytes(b"\0" * 32)
    assert check_model_dir(model).startswith("1 weight file")


def test_missing_shards_of_a_sharded_model_are_listed(model: Path) -> None:
    (model / "model.safetensors").unlink()
    write_safetensors(model / "model-00001-of-00003.safetensors", {"a": 8})
    index = {
        "weight_map": {
            "a": "model-00001-of-00003.safetensors",
            "b": "model-00002-of-00003.safetensors",
            "c": "model-00003-of-00003.safetensors",
        }
    }
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelNotFound) as caught:
        check_model_dir(model)
    message = caught.value.message
    assert "lists 3 weight shards, 2 missing" in message
    assert "model-00002-of-00003.safetensors, model-00003-of-00003.safetensors" in message
    assert "interrupted" in caught.value.hint


def test_a_complete_sharded_model_resolves(model: Path) -> None:
    (model / "model.safetensors").unlink()
    shards = [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    for shard in shards:
        write_safetensors(model / shard, {"t": 16})
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shards[0], "b": shards[1]}}))
    assert check_model_dir(model).startswith("2 weight files")


def test_a_truncated_safetensors_file_is_reported_as_truncated(model: Path) -> None:
    write_safetensors(model / "model.safetensors", {"embed": 4096, "lm_head": 4096}, data_bytes=5000)
    with pytest.raises(ModelSourceError) as caught:
        check_model_dir(model)
    message = caught.value.message
    assert f"{model / 'model.safetensors'} is corrupt or truncated" in message
    assert "declares 8192 bytes of tensor data but the file holds 5000" in message
    assert "copy or download this file again" in caught.value.hint


def test_a_safetensors_file_cut_inside_its_header_is_reported(model: Path) -> None:
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[:20])
    with pytest.raises(ModelSourceError, match="header length .* does not fit in 20 bytes"):
        check_model_dir(model)


def test_a_safetensors_file_with_a_garbage_header_is_reported(model: Path) -> None:
    (model / "model.safetensors").write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{[" + b"\0" * 64)
    with pytest.raises(ModelSourceError, match="header is not valid JSON"):
        check_model_dir(model)


def test_an_empty_safetensors_file_is_reported(model: Path) -> None:
    (model / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelSourceError, match="0 bytes, too short"):
        check_model_dir(model)


async def test_a_missing_tokenizer_is_named_unless_args_give_one(model: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()
    with pytest.raises(ModelNotFound) as caught:
        await resolve(model)
    assert f"model directory {model} has no tokenizer" in caught.value.message
    assert "tokenizer.json, tokenizer_config.json, tokenizer.model" in caught.value.message
    assert "--tokenizer" in caught.value.hint
    resolved, _ = await resolve(model, args=["--tokenizer", "/srv/tokenizers/llama"])
    assert resolved.path == model


def test_a_sentencepiece_tokenizer_alone_is_enough(model: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()
    (model / "tokenizer.model").write_bytes(b"\x0a\x0b")
    check_model_dir(model)


def test_a_damaged_tokenizer_json_is_named(model: Path) -> None:
    (model / "tokenizer.json").write_text('{"version": ')
    with pytest.raises(ModelSourceError, match=r"tokenizer\.json is not valid JSON"):
        check_model_dir(model)


def test_an_unreadable_directory_says_the_service_user_needs_access() -> None:
    # Root reads every directory: as root (CI), the check runs in a child that became nobody.
    base = Path(tempfile.mkdtemp(prefix="vllm-agent-unreadable-"))
    try:
        base.chmod(0o755)
        model = make_model(base / "model")
        model.chmod(0)
        message, hint = _check_as_unprivileged(model)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert "permission denied" in message
    assert "service user" in hint


def _check_as_unprivileged(model: Path) -> list[str]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, check, report through the pipe, never return
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                check_model_dir(model)
                found = ["", ""]
            except ModelSourceError as err:
                found = [err.message, err.hint or ""]
            os.write(write, json.dumps(found).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(answer)
